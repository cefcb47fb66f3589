//! Disk images made from `kernel` + `initramfs`: `raw` (GPT, UEFI), `qcow2` and `iso`.

pub mod convert;
pub mod fat;
pub mod gpt;
pub mod grub;
pub mod iso;
pub mod raw;
