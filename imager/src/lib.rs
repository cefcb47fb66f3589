//! Image builder and QEMU provisioner.
