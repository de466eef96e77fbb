//! Arguments of `lifeboat export`: serve a snapshot's disk over NBD.

use std::path::PathBuf;

use clap::Args;

use super::defaults::parse_size;

const EXPORT_HELP: &str = "\
Instant recovery: the snapshot's disk is served read-only over NBD straight from the
repository; chunks are fetched when first read (verified, cached, with read-ahead).
Boot a VM at once on a qcow2 overlay backed by the export, instead of waiting for a
full restore:

  lifeboat export latest --vm web01 --disk root --nbd unix:/run/lifeboat/web01.sock &
  qemu-img create -f qcow2 -b 'nbd+unix:///?socket=/run/lifeboat/web01.sock' -F raw web01.qcow2
  qemu-system-x86_64 ... -drive file=web01.qcow2,if=virtio

  # with -qmp unix:/run/web01.qmp,server=on,wait=off

The VM's writes land in the overlay. Keep the export running while the VM runs.
With --migrate /run/web01.qmp, the export waits for the VM (up to 10 minutes), streams
the rest of the disk into the overlay while the VM runs, and exits 0 once the overlay
stands alone: the VM then runs on local storage only. Without it, `qemu-img rebase -b
'' web01.qcow2` does the same while the VM is stopped. Ctrl-C or SIGTERM stops the
export (exit 1 if a migration was still running: the VM still needs the export).";

#[derive(Debug, Args)]
#[command(after_long_help = EXPORT_HELP)]
pub struct ExportArgs {
    /// Snapshot id (or unique prefix), or `latest`
    pub snapshot: String,
    /// With `latest`: which VM
    #[arg(long)]
    pub vm: Option<String>,
    /// With `latest`: which disk
    #[arg(long)]
    pub disk: Option<String>,
    /// Where to serve: unix:PATH, or HOST:PORT (TCP; plain, so keep it on a trusted
    /// network or loopback)
    #[arg(long, value_name = "ADDRESS")]
    pub nbd: String,
    /// Plaintext chunks kept in memory, e.g. 256MiB
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub cache: u32,
    /// Bytes after each read fetched ahead in the background (0: none), e.g. 16MiB
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub read_ahead: u32,
    /// Ranged reads in flight
    #[arg(long, default_value_t = 8)]
    pub fetches: usize,
    /// The QMP socket of the VM booted on an overlay backed by this export: once the
    /// VM runs, the rest of the disk is streamed into its overlay (live, QMP
    /// block-stream) and the export stops; the VM then needs no repository
    #[arg(long, value_name = "QMP_SOCKET")]
    pub migrate: Option<PathBuf>,
    /// With --migrate: the VM's drive (its -drive id=) [default: the drive whose
    /// backing file is this export]
    #[arg(long, value_name = "ID", requires = "migrate")]
    pub drive: Option<String>,
}
