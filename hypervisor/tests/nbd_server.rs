//! The read-only NBD server against real QEMU tools (qemu-img, qemu-io: QEMU 7.2
//! here), Lifeboat's own NBD client, and a raw-socket hostile client.
//!
//! Each test serves 8 MiB of pseudo-random bytes from memory on a unix socket in its
//! own temp dir and shuts the server down at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lifeboat_hypervisor::nbd::{
    ALLOCATION_CONTEXT, MappedExtent, NbdAddress, NbdClient, STATE_HOLE, STATE_ZERO,
};
use lifeboat_hypervisor::nbd_server::{BlockSource, ListenAddress, NbdServer, NbdServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MIB: usize = 1024 * 1024;
const SIZE: usize = 8 * MIB;

struct Memory(Bytes);

#[async_trait::async_trait]
impl BlockSource for Memory {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    async fn read_at(&self, offset: u64, len: u32) -> Result<Bytes, std::io::Error> {
        let start = offset as usize;
        Ok(self.0.slice(start..start + len as usize))
    }
}

fn random_bytes(n: usize) -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v.into()
}

struct Served {
    socket: PathBuf,
    data: Bytes,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NbdServerError>>>,
}

impl Served {
    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }
    async fn shutdown(mut self) -> Result<(), NbdServerError> {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("serve returns within 10 s of shutdown")
            .unwrap()
    }
}

async fn serve(dir: &Path) -> Served {
    let data = random_bytes(SIZE);
    serve_source(dir, data.clone(), Arc::new(Memory(data))).await
}

async fn serve_source(dir: &Path, data: Bytes, source: Arc<dyn BlockSource>) -> Served {
    let socket = dir.join("disk.sock");
    let server = NbdServer::bind(&ListenAddress::Unix(socket.clone()))
        .await
        .unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve("disk".into(), source, async {
        let _ = rx.await;
    }));
    Served {
        socket,
        data,
        stop: Some(tx),
        task: Some(task),
    }
}

async fn tool(name: &str, args: &[&str]) -> std::process::Output {
    Command::new(name).args(args).output().await.unwrap()
}

async fn ok(name: &str, args: &[&str]) -> String {
    let out = tool(name, args).await;
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_img_convert_copies_the_export_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let out = dir.path().join("out.raw");
    ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            &s.uri(),
            "-O",
            "raw",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(std::fs::read(&out).unwrap() == s.data[..], "copy differs");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifeboat_client_reads_ranges_with_many_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let addr = NbdAddress::parse(&s.uri()).unwrap();
    let client = Arc::new(NbdClient::connect(&addr, &[]).await.unwrap());
    assert_eq!(client.size(), SIZE as u64);
    assert!(client.is_read_only());
    let mut reads = tokio::task::JoinSet::new();
    for i in 0..32u64 {
        let c = Arc::clone(&client);
        // Odd offsets and lengths, the last one ending exactly at the end of the disk.
        let (offset, len) = if i == 31 {
            (SIZE as u64 - 777, 777)
        } else {
            (i * 250_001 + 3, 4096 + (i as u32) * 7919)
        };
        reads.spawn(async move { (offset, len, c.read(offset, len).await.unwrap()) });
    }
    while let Some(r) = reads.join_next().await {
        let (offset, len, got) = r.unwrap();
        let want = &s.data[offset as usize..offset as usize + len as usize];
        assert!(got[..] == *want, "read of {len} at {offset} differs");
    }
    let big = client.read(MIB as u64, 4 * MIB as u32).await.unwrap();
    assert!(big[..] == s.data[MIB..5 * MIB]);
    drop(client);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qcow2_overlay_reads_its_own_writes_and_the_served_data_beneath() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let overlay = dir.path().join("overlay.qcow2");
    let ov = overlay.to_str().unwrap();
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &s.uri(),
            "-F",
            "raw",
            ov,
        ],
    )
    .await;
    ok("qemu-io", &["-f", "qcow2", "-c", "write -P 0x55 0 4k", ov]).await;
    let out = ok(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "read -P 0x55 0 4k",
            "-c",
            "read -v 4096 16",
            ov,
        ],
    )
    .await;
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let hex: String = s.data[4096..4112]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(out.contains(&hex), "expected served bytes {hex} in:\n{out}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_the_export_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;
    let out = tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x11 0 512", &s.uri()],
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("read-only")
            || text.contains("not permitted")
            || text.contains("Permission denied"),
        "qemu-io write should fail with a permission error: {text}"
    );
    // Past qemu's own read-only check: the server itself answers a write with EPERM.
    let mut c = go(&s.socket).await;
    let mut req = request(1, 7, 0, 512);
    req.extend_from_slice(&[0x11; 512]);
    c.write_all(&req).await.unwrap();
    assert_eq!(simple_reply(&mut c).await, (1, 7), "EPERM for cookie 7");
    c.write_all(&request(0, 8, 0, 512)).await.unwrap();
    assert_eq!(simple_reply(&mut c).await, (0, 8));
    let mut data = vec![0u8; 512];
    c.read_exact(&mut data).await.unwrap();
    assert!(data[..] == s.data[..512], "data changed by a refused write");
    s.shutdown().await.unwrap();
}

fn request(kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

fn option(opt: u32, data: &[u8], claimed_len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"IHAVEOPT");
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&claimed_len.to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Reads the greeting and sends fixed-newstyle + no-zeroes client flags.
async fn greet(socket: &Path) -> UnixStream {
    let mut c = UnixStream::connect(socket).await.unwrap();
    let mut g = [0u8; 18];
    c.read_exact(&mut g).await.unwrap();
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
    c.write_all(&3u32.to_be_bytes()).await.unwrap();
    c
}

/// Returns (option, reply type, data) of the next option reply.
async fn option_reply(c: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let mut h = [0u8; 20];
    c.read_exact(&mut h).await.unwrap();
    assert_eq!(h[..8], 0x0003_e889_0455_65a9u64.to_be_bytes());
    let be32 = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().unwrap());
    let mut data = vec![0u8; be32(16) as usize];
    c.read_exact(&mut data).await.unwrap();
    (be32(8), be32(12), data)
}

/// A raw connection in the transmission phase, through NBD_OPT_GO on export "".
async fn go(socket: &Path) -> UnixStream {
    let mut c = greet(socket).await;
    let data = [0u8; 6]; // empty name, no info requests
    c.write_all(&option(7, &data, 6)).await.unwrap();
    loop {
        let (opt, kind, _) = option_reply(&mut c).await;
        assert_eq!(opt, 7);
        match kind {
            1 => return c,
            3 => continue,
            k => panic!("NBD_OPT_GO refused with {k:#x}"),
        }
    }
}

/// (error, cookie) of the next simple reply.
async fn simple_reply(c: &mut UnixStream) -> (u32, u64) {
    let mut h = [0u8; 16];
    c.read_exact(&mut h).await.unwrap();
    assert_eq!(h[..4], 0x6744_6698u32.to_be_bytes());
    (
        u32::from_be_bytes(h[4..8].try_into().unwrap()),
        u64::from_be_bytes(h[8..16].try_into().unwrap()),
    )
}

/// True when the server closed the connection (EOF or reset) within 5 s.
async fn closed(c: &mut UnixStream) -> bool {
    let mut b = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_errors_or_are_dropped_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path()).await;

    // Wrong option magic: the stream cannot be trusted any more.
    let mut c = greet(&s.socket).await;
    c.write_all(b"NOTMAGIC\0\0\0\x07\0\0\0\0").await.unwrap();
    assert!(closed(&mut c).await, "bad option magic must close");

    // An option claiming 4 GiB of data: refused without reading (or allocating) it.
    let mut c = greet(&s.socket).await;
    c.write_all(&option(7, &[], u32::MAX)).await.unwrap();
    let (_, kind, _) = option_reply(&mut c).await;
    assert_eq!(kind, (1 << 31) + 9, "NBD_REP_ERR_TOO_BIG");
    assert!(closed(&mut c).await);

    // Unknown options and unknown exports are answered, the connection goes on.
    let mut c = greet(&s.socket).await;
    c.write_all(&option(0x4242, b"junk", 4)).await.unwrap();
    assert_eq!(
        option_reply(&mut c).await.1,
        (1 << 31) + 1,
        "NBD_REP_ERR_UNSUP"
    );
    let mut name = 5u32.to_be_bytes().to_vec();
    name.extend_from_slice(b"other\0\0");
    c.write_all(&option(7, &name, name.len() as u32))
        .await
        .unwrap();
    assert_eq!(
        option_reply(&mut c).await.1,
        (1 << 31) + 6,
        "NBD_REP_ERR_UNKNOWN"
    );
    c.write_all(&option(3, &[], 0)).await.unwrap();
    let (_, kind, data) = option_reply(&mut c).await;
    assert_eq!(
        (kind, &data[4..]),
        (2, &b"disk"[..]),
        "NBD_OPT_LIST names the export"
    );
    assert_eq!(option_reply(&mut c).await.1, 1);

    // Reads of 2 GiB, past the end, or overflowing the offset: EINVAL, still connected.
    let mut c = go(&s.socket).await;
    for (cookie, offset, len) in [
        (1, 0, 2u32 << 30),
        (2, SIZE as u64 - 1, 2),
        (3, u64::MAX, 1),
    ] {
        c.write_all(&request(0, cookie, offset, len)).await.unwrap();
        assert_eq!(simple_reply(&mut c).await, (22, cookie));
    }
    // A write announcing a 2 GiB payload cannot be skipped: dropped.
    c.write_all(&request(1, 4, 0, 2 << 30)).await.unwrap();
    assert!(closed(&mut c).await, "oversized write payload must close");
    // A bad request magic: dropped.
    let mut c = go(&s.socket).await;
    c.write_all(&[0xff; 28]).await.unwrap();
    assert!(closed(&mut c).await);

    // Meanwhile a well-behaved client is served as usual.
    let client = NbdClient::connect(&NbdAddress::parse(&s.uri()).unwrap(), &[])
        .await
        .unwrap();
    let got = client.read(12345, 1000).await.unwrap();
    assert!(got[..] == s.data[12345..13345]);
    drop(client);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_closes_clients_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    // A stale socket file from a crashed server is replaced.
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("disk.sock")).unwrap();
    drop(stale);
    let s = serve(dir.path()).await;
    let socket = s.socket.clone();
    let client = NbdClient::connect(&NbdAddress::parse(&s.uri()).unwrap(), &[])
        .await
        .unwrap();
    assert_eq!(client.read(0, 512).await.unwrap()[..], s.data[..512]);
    // A second server on the live socket is refused, and leaves the socket alone.
    let second = NbdServer::bind(&ListenAddress::Unix(socket.clone())).await;
    assert!(
        matches!(second, Err(NbdServerError::InUse(_))),
        "{:?}",
        second.err()
    );
    s.shutdown().await.unwrap();
    assert!(!socket.exists(), "socket file left behind");
    assert!(
        client.read(0, 512).await.is_err(),
        "connection still open after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_port_zero_reports_the_bound_port() {
    let server = NbdServer::bind(&ListenAddress::Tcp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let ListenAddress::Tcp(addr) = server.local_addr().clone() else {
        panic!("not TCP")
    };
    assert_ne!(addr.port(), 0);
    let data = random_bytes(MIB);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(
        server.serve("x".into(), Arc::new(Memory(data.clone())), async {
            let _ = rx.await;
        }),
    );
    let uri = format!("nbd://127.0.0.1:{}/x", addr.port());
    let client = NbdClient::connect(&NbdAddress::parse(&uri).unwrap(), &[])
        .await
        .unwrap();
    assert!(client.read(100, 100).await.unwrap()[..] == data[100..200]);
    drop(client);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// Memory whose reads at offset 0 take 300 ms: a repository fetching a cold block.
struct SlowStart(Memory);

#[async_trait::async_trait]
impl BlockSource for SlowStart {
    fn size(&self) -> u64 {
        self.0.size()
    }
    async fn read_at(&self, offset: u64, len: u32) -> Result<Bytes, std::io::Error> {
        if offset == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.0.read_at(offset, len).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reads_do_not_hold_up_others_and_finish_before_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE);
    let s = serve_source(dir.path(), data.clone(), Arc::new(SlowStart(Memory(data)))).await;
    let mut c = go(&s.socket).await;
    let mut both = request(0, 1, 0, 4096);
    both.extend_from_slice(&request(0, 2, 4096, 4096));
    c.write_all(&both).await.unwrap();
    // The fast read overtakes the slow one; replies are matched by cookie.
    assert_eq!(simple_reply(&mut c).await, (0, 2));
    let mut got = vec![0u8; 4096];
    c.read_exact(&mut got).await.unwrap();
    assert!(got[..] == s.data[4096..8192]);
    assert_eq!(simple_reply(&mut c).await, (0, 1));
    c.read_exact(&mut got).await.unwrap();
    assert!(got[..] == s.data[..4096]);

    // A slow read in flight when shutdown comes is still answered, then the
    // connection closes.
    c.write_all(&request(0, 3, 0, 4096)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let data = s.data.clone();
    let stopped = tokio::spawn(s.shutdown());
    assert_eq!(simple_reply(&mut c).await, (0, 3));
    c.read_exact(&mut got).await.unwrap();
    assert!(got[..] == data[..4096]);
    assert!(closed(&mut c).await, "connection open after shutdown");
    stopped.await.unwrap().unwrap();
}

/// 1 MiB of data, then zeros it knows about: a sparse backup point.
struct Sparse(Memory);

#[async_trait::async_trait]
impl BlockSource for Sparse {
    fn size(&self) -> u64 {
        self.0.size()
    }
    async fn read_at(&self, offset: u64, len: u32) -> Result<Bytes, std::io::Error> {
        self.0.read_at(offset, len).await
    }
    fn zero_ranges(&self, offset: u64, len: u32) -> Option<Vec<(u64, u64, bool)>> {
        let (start, end, mib) = (offset, offset + u64::from(len), MIB as u64);
        let mut v = Vec::new();
        if start < mib {
            v.push((start, end.min(mib) - start, false));
        }
        if end > mib {
            v.push((start.max(mib), end - start.max(mib), true));
        }
        Some(v)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_replies_and_allocation_map_for_clients_that_ask() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = random_bytes(SIZE).to_vec();
    data[MIB..].fill(0);
    let data = Bytes::from(data);
    let s = serve_source(dir.path(), data.clone(), Arc::new(Sparse(Memory(data)))).await;
    let addr = NbdAddress::parse(&s.uri()).unwrap();
    let client = NbdClient::connect(&addr, &[ALLOCATION_CONTEXT.to_string()])
        .await
        .unwrap();
    let map = client
        .map(ALLOCATION_CONTEXT, 0, SIZE as u64)
        .await
        .unwrap();
    let zero = STATE_HOLE | STATE_ZERO;
    let want = [(0, MIB as u64, 0), (MIB as u64, (SIZE - MIB) as u64, zero)].map(
        |(offset, length, flags)| MappedExtent {
            offset,
            length,
            flags,
        },
    );
    assert_eq!(map, want);
    // Reads come back as structured data chunks.
    let got = client.read(MIB as u64 - 100, 200).await.unwrap();
    assert!(got[..] == s.data[MIB - 100..MIB + 100]);
    assert!(
        client.read(SIZE as u64 - 10, 20).await.is_err(),
        "read past the end"
    );
    drop(client);

    // QEMU sees the same map, and copies the disk correctly through it.
    let json = ok("qemu-img", &["map", "--output=json", "-f", "raw", &s.uri()]).await;
    let line = |start: usize| {
        json.lines()
            .find(|l| l.contains(&format!("\"start\": {start}, ")))
            .unwrap_or_else(|| panic!("no extent at {start} in {json}"))
    };
    assert!(
        line(0).contains(&format!("\"length\": {MIB}, ")) && line(0).contains("\"data\": true"),
        "{json}"
    );
    let zeros = line(MIB);
    assert!(
        zeros.contains(&format!("\"length\": {}, ", SIZE - MIB)),
        "{json}"
    );
    assert!(
        zeros.contains("\"zero\": true") && zeros.contains("\"data\": false"),
        "{json}"
    );
    let out = dir.path().join("out.raw");
    ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            &s.uri(),
            "-O",
            "raw",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(std::fs::read(&out).unwrap() == s.data[..], "copy differs");
    s.shutdown().await.unwrap();
}
