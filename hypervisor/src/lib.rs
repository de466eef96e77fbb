//! Lifeboat's side of QEMU: everything that talks to a hypervisor process, and
//! nothing about repositories, snapshots or schedules.
//!
//! * [`qmp`]: a QEMU Machine Protocol client, to drive a running VM's block graph
//!   (bitmaps, block jobs, exports);
//! * [`nbd`]: an async NBD client that reads disks and their allocation and
//!   dirty-bitmap maps;
//! * [`qemu_nbd`] and [`qemu_img`]: launching `qemu-nbd` on an image file, and the
//!   `qemu-img` operations on one (format, size, persistent bitmaps);
//! * [`nbd_server`]: a small read-only NBD server over a [`nbd_server::BlockSource`],
//!   so a VM can boot on a qcow2 overlay backed by a disk served straight out of the
//!   repository (instant recovery);
//! * [`block_stream`]: a running VM's qcow2 overlays made standalone, live;
//! * [`launch`]: the VM launcher that drills and failover boot replicas with
//!   (`qemu-system-x86_64` today, behind a trait a libvirt driver can implement),
//!   and [`launch::watch_boot`], which proves from the serial console and health
//!   checks that the guest booted.
//!
//! It sits below `backup`, `restore` and the replicator, beside `store`, and depends
//! on neither. Its errors are its own ([`nbd::NbdError`], [`qmp::QmpError`],
//! [`ToolError`], [`launch::LaunchError`], [`nbd_server::NbdServerError`]); the first two say whether a retry can help.

pub mod block_stream;
pub mod launch;
pub mod nbd;
pub mod nbd_server;
pub mod qemu_img;
pub mod qemu_nbd;
pub mod qmp;
mod tool;

pub use tool::ToolError;
