//! Lifeboat's side of QEMU: everything that talks to a hypervisor process, and
//! nothing about repositories, snapshots or schedules.
//!
//! * [`qmp`]: a QEMU Machine Protocol client, to drive a running VM's block graph
//!   (bitmaps, block jobs, exports);
//! * [`nbd`]: an async NBD client that reads disks and their allocation and
//!   dirty-bitmap maps, and a launcher for `qemu-nbd`.
//!
//! Next here: the VM launcher that drills and failover boot replicas with.
//!
//! It sits below `backup`, `restore` and the replicator, beside `store`, and depends
//! on neither.

pub mod nbd;
pub mod qmp;
