//! Disk sources: where a backup reads a disk from.
//!
//! * `disk`: the [`DiskSource`] trait the pipeline reads through;
//! * `file`: [`RawSource`], raw image files and block devices;
//! * `nbd`: [`NbdSource`], an NBD export (qemu-nbd serving qcow2, VHDX, VMDK…, or a
//!   running VM's point-in-time view).

mod disk;
mod file;
mod nbd;

pub use disk::DiskSource;
pub use file::RawSource;
pub use nbd::NbdSource;
pub(crate) use nbd::nbd_err;
