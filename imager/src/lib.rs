//! Image builder and QEMU provisioner.
//!
//! The build goes: kernel tree ([`fetch`], [`kernel`]) and kernel modules ([`modules`]);
//! our binaries ([`cargo_build`]) and third-party ones with their libraries ([`elf_deps`]);
//! the read-only root ([`rootfs`]); the initramfs ([`cpio`], [`initramfs`]); all of it
//! driven by [`image`]. [`qemu`] boots the result.

pub mod cargo_build;
pub mod config;
pub mod cpio;
pub mod disk;
pub mod elf_deps;
pub mod epoch;
pub mod fetch;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod progress;
pub mod qemu;
pub mod report;
pub mod rootfs;
pub mod tools;
