//! Attaching a file to a loop device, read-only: LOOP_CTL_GET_FREE, then LOOP_CONFIGURE
//! (Linux 5.8+) or, on older kernels, LOOP_SET_FD + LOOP_SET_STATUS64.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_NAME_SIZE: usize = 64;
const LOOP_MAJOR: u64 = 7;

/// `struct loop_info64` from <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from <linux/loop.h>.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

fn info_for(image: &Path) -> LoopInfo64 {
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = image.as_os_str().as_encoded_bytes();
    let len = bytes.len().min(LO_NAME_SIZE - 1);
    name[..len].copy_from_slice(&bytes[..len]);
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_READ_ONLY,
        lo_file_name: name,
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

pub fn attach_read_only(image: &Path) -> io::Result<PathBuf> {
    let backing = File::open(image)?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Another process may grab the same free device; try a few.
    let mut last = io::Error::from(Errno::EBUSY);
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument.
        let number = unsafe { loop_ctl_get_free(control.as_raw_fd()) }?;
        let device = PathBuf::from(format!("/dev/loop{number}"));
        if !device.exists() {
            // devtmpfs normally creates it; make it ourselves if not.
            let dev = makedev(LOOP_MAJOR, number as u64);
            mknod(
                &device,
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o660),
                dev,
            )?;
        }
        let loop_file = OpenOptions::new().read(true).open(&device)?;
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: info_for(image),
            reserved: [0; 8],
        };
        // SAFETY: the ioctl reads a LoopConfig laid out as the kernel's struct.
        match unsafe { loop_configure(loop_file.as_raw_fd(), &config) } {
            Ok(_) => return Ok(device),
            Err(Errno::EBUSY) => last = Errno::EBUSY.into(),
            Err(Errno::EINVAL | Errno::ENOTTY) => {
                return attach_legacy(&loop_file, &backing, image, device);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last)
}

fn attach_legacy(
    loop_file: &File,
    backing: &File,
    image: &Path,
    device: PathBuf,
) -> io::Result<PathBuf> {
    // SAFETY: LOOP_SET_FD takes the backing file descriptor by value.
    unsafe { loop_set_fd(loop_file.as_raw_fd(), backing.as_raw_fd()) }?;
    let info = info_for(image);
    // SAFETY: the ioctl reads a LoopInfo64 laid out as the kernel's struct.
    unsafe { loop_set_status64(loop_file.as_raw_fd(), &info) }?;
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_the_kernel_abi() {
        // sizeof(struct loop_info64) == 232, sizeof(struct loop_config) == 304 on every arch.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn long_names_are_truncated_and_terminated() {
        let long = "/".to_string() + &"x".repeat(100);
        let info = info_for(Path::new(&long));
        assert_eq!(info.lo_file_name[LO_NAME_SIZE - 1], 0);
        assert_eq!(info.lo_flags, LO_FLAGS_READ_ONLY);
    }
}
