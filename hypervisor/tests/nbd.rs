//! The NBD client against real `qemu-nbd` (QEMU 7.2 here), started by `QemuNbd`, plus a scripted hostile
//! server for what qemu-nbd will never do (absurd lengths, errors, dropping out).
//!
//! Images live in per-test temp dirs; every `QemuNbd` is stopped or dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_hypervisor::nbd::{
    MappedExtent, NbdAddress, NbdClient, NbdError, STATE_DIRTY, STATE_HOLE, STATE_ZERO,
};
use lifeboat_hypervisor::qemu_img::detect_format;
use lifeboat_hypervisor::qemu_nbd::QemuNbd;
use tokio::process::Command;
use tokio::task::JoinSet;

// What qemu-nbd never does (absurd lengths, error chunks, vanishing): a scripted server.
#[path = "nbd/hostile.rs"]
mod hostile;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

async fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().await.unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn qcow2(dir: &Path, size_mib: u64) -> PathBuf {
    let img = dir.join("disk.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            img.to_str().unwrap(),
            &format!("{size_mib}M"),
        ],
    )
    .await;
    img
}

async fn write(img: &Path, fmt: &str, pattern: u8, offset: u64, len: u64) {
    let cmd = format!("write -P {pattern:#04x} {offset} {len}");
    run("qemu-io", &["-f", fmt, "-c", &cmd, img.to_str().unwrap()]).await;
}

fn contexts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// What test 1's image holds at `offset`.
fn expected(offset: u64) -> u8 {
    if (MIB..MIB + 64 * KIB).contains(&offset) {
        0xaa
    } else if (5 * MIB + 3..5 * MIB + 1003).contains(&offset) {
        0x55
    } else {
        0
    }
}

fn check(data: &[u8], offset: u64) {
    for (i, &b) in data.iter().enumerate() {
        let at = offset + i as u64;
        assert_eq!(b, expected(at), "byte at {at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_patterns_holes_and_many_concurrent_requests() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path(), 64).await;
    write(&img, "qcow2", 0xaa, MIB, 64 * KIB).await;
    write(&img, "qcow2", 0x55, 5 * MIB + 3, 1000).await; // unaligned on purpose

    let server = QemuNbd::start(&img, Some("qcow2"), None).await.unwrap();
    let client = Arc::new(NbdClient::connect(&server.address(), &[]).await.unwrap());
    assert_eq!(client.size(), 64 * MIB);
    assert!(client.is_read_only());

    check(&client.read(MIB, 64 * 1024).await.unwrap(), MIB);
    check(&client.read(0, 1 << 20).await.unwrap(), 0);
    // Spans hole, data, hole: several chunks in one structured reply.
    check(
        &client.read(MIB - 4096, 72 * 1024).await.unwrap(),
        MIB - 4096,
    );
    check(&client.read(5 * MIB, 4096).await.unwrap(), 5 * MIB);
    check(&client.read(64 * MIB - 1, 1).await.unwrap(), 64 * MIB - 1);
    // The largest single read.
    let max = client.max_read_len();
    assert_eq!(max, 32 << 20);
    check(&client.read(0, max).await.unwrap(), 0);

    // 64 reads in flight at once from many tasks, odd sizes and offsets.
    let mut tasks = JoinSet::new();
    for i in 0..64u64 {
        let client = client.clone();
        tasks.spawn(async move {
            let offset = (i * 997 * KIB + i * 7) % (60 * MIB);
            let len = (4 * KIB + i * 31 * KIB) as u32;
            let data = client.read(offset, len).await.unwrap();
            assert_eq!(data.len(), len as usize);
            check(&data, offset);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }

    // A second client on the same export at the same time (--shared).
    let other = NbdClient::connect(&server.address(), &[]).await.unwrap();
    let (a, b) = tokio::join!(client.read(MIB, 4096), other.read(5 * MIB, 4096));
    check(&a.unwrap(), MIB);
    check(&b.unwrap(), 5 * MIB);
    other.disconnect().await.unwrap();

    // Requests the client refuses before sending, with a reason.
    for (offset, len) in [(64 * MIB - 4096, 8192), (0, 0), (u64::MAX - 10, 100)] {
        let err = client.read(offset, len).await.unwrap_err();
        assert!(matches!(err, NbdError::InvalidRequest(_)), "{err}");
        assert!(!err.is_retryable());
    }
    let err = client.read(0, max + 512).await.unwrap_err();
    assert!(err.to_string().contains("split it"), "{err}");
    // ... and the connection is still fine.
    check(&client.read(MIB, 512).await.unwrap(), MIB);

    Arc::into_inner(client).unwrap().disconnect().await.unwrap();
    server.stop().await.unwrap();
}

/// The TCP path, against qemu-nbd listening on 127.0.0.1 (QemuNbd only does unix
/// sockets, so this one is started by hand).
#[tokio::test]
async fn reads_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path(), 8).await;
    write(&img, "qcow2", 0xaa, MIB, 64 * KIB).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("qemu-nbd")
        .args([
            "--read-only",
            "--persistent",
            "-f",
            "qcow2",
            "-x",
            "tcpdisk",
            "-b",
            "127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(&img)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = NbdAddress::parse(&format!("nbd://127.0.0.1:{port}/tcpdisk")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match NbdClient::connect(&addr, &contexts(&["base:allocation"])).await {
            Ok(c) => break c,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(client.size(), 8 * MIB);
    check(&client.read(MIB - 512, 4096).await.unwrap(), MIB - 512);
    let map = client
        .map("base:allocation", 0, client.size())
        .await
        .unwrap();
    assert_eq!(
        map[1],
        MappedExtent {
            offset: MIB,
            length: 64 * KIB,
            flags: 0
        }
    );
    client.disconnect().await.unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn base_allocation_maps_data_and_holes() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path(), 64).await;
    write(&img, "qcow2", 0xaa, MIB, 64 * KIB).await;

    let server = QemuNbd::start(&img, None, None).await.unwrap();
    let client = NbdClient::connect(&server.address(), &contexts(&["base:allocation"]))
        .await
        .unwrap();
    assert_eq!(client.contexts().collect::<Vec<_>>(), ["base:allocation"]);

    let map = client
        .map("base:allocation", 0, client.size())
        .await
        .unwrap();
    let hole = STATE_HOLE | STATE_ZERO;
    assert_eq!(
        map,
        [
            MappedExtent {
                offset: 0,
                length: MIB,
                flags: hole
            },
            MappedExtent {
                offset: MIB,
                length: 64 * KIB,
                flags: 0
            },
            MappedExtent {
                offset: MIB + 64 * KIB,
                length: 63 * MIB - 64 * KIB,
                flags: hole
            },
        ]
    );

    // A sub-range, and the raw call: extents start at the offset asked for.
    let part = client
        .map("base:allocation", MIB + 4096, 2 * MIB)
        .await
        .unwrap();
    assert_eq!(
        part[0],
        MappedExtent {
            offset: MIB + 4096,
            length: 60 * KIB,
            flags: 0
        }
    );
    assert_eq!(part.last().map(|e| e.offset + e.length), Some(2 * MIB));
    let raw = client
        .block_status("base:allocation", MIB, 128 * 1024)
        .await
        .unwrap();
    assert_eq!(raw[0].length, 64 * 1024);
    assert_eq!(raw[0].flags, 0);
    assert!(raw.iter().map(|e| u64::from(e.length)).sum::<u64>() <= 128 * KIB);

    // A context that was not negotiated is refused locally.
    let err = client
        .block_status("qemu:dirty-bitmap:b0", 0, 4096)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not negotiated"), "{err}");
    client.disconnect().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn dirty_bitmap_reports_exactly_the_changed_granules() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path(), 64).await;
    let path = img.to_str().unwrap();
    // Written before the bitmap exists: allocated, but not dirty.
    write(&img, "qcow2", 0x11, 0, 64 * KIB).await;
    run("qemu-img", &["bitmap", "--add", path, "b0"]).await;
    write(&img, "qcow2", 0xbb, MIB, 64 * KIB).await;
    // 200 bytes inside one 64 KiB granule (the default): the whole granule is dirty.
    write(&img, "qcow2", 0xcc, 10 * MIB + 100, 200).await;
    // Across a granule boundary: both granules.
    write(&img, "qcow2", 0xdd, 20 * MIB - 512, 1024).await;

    let server = QemuNbd::start(&img, Some("qcow2"), Some("b0"))
        .await
        .unwrap();
    let ctx = "qemu:dirty-bitmap:b0";
    // Both contexts on one connection: each reply carries both, the client keeps one.
    let client = NbdClient::connect(&server.address(), &contexts(&[ctx, "base:allocation"]))
        .await
        .unwrap();
    let dirty: Vec<_> = client
        .map(ctx, 0, client.size())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.flags & STATE_DIRTY != 0)
        .map(|e| (e.offset, e.length))
        .collect();
    let g = 64 * KIB;
    assert_eq!(dirty, [(MIB, g), (10 * MIB, g), (20 * MIB - g, 2 * g)]);

    let alloc = client.map("base:allocation", 0, 2 * MIB).await.unwrap();
    assert_eq!(
        alloc[0],
        MappedExtent {
            offset: 0,
            length: g,
            flags: 0
        }
    );
    assert_eq!(client.read(0, 1).await.unwrap()[0], 0x11);
    client.disconnect().await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn missing_bitmap_context_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path(), 16).await;
    run(
        "qemu-img",
        &["bitmap", "--add", img.to_str().unwrap(), "b0"],
    )
    .await;

    // Exported without -B: the bitmap context is not offered.
    let server = QemuNbd::start(&img, Some("qcow2"), None).await.unwrap();
    let err = NbdClient::connect(
        &server.address(),
        &contexts(&["base:allocation", "qemu:dirty-bitmap:b0"]),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, NbdError::MetaContextNotOffered { context, .. } if context == "qemu:dirty-bitmap:b0")
    );
    let msg = err.to_string();
    assert!(
        msg.contains("does not offer meta context qemu:dirty-bitmap:b0") && msg.contains("-B b0"),
        "{msg}"
    );
    assert!(!err.is_retryable());
    // Exported with -B b0, but asking for another bitmap.
    let server2 = QemuNbd::start(&img, Some("qcow2"), Some("b0"))
        .await
        .unwrap();
    let err = NbdClient::connect(&server2.address(), &contexts(&["qemu:dirty-bitmap:nope"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("-B nope"), "{err}");
    server2.stop().await.unwrap();

    // A bitmap the image lacks: qemu-nbd refuses to start, and says why.
    let err = QemuNbd::start(&img, Some("qcow2"), Some("nope"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("qemu-nbd") && msg.contains("nope"), "{msg}");
    // A wrong export name.
    let NbdAddress::Unix { socket, .. } = server.address() else {
        unreachable!()
    };
    let wrong = NbdAddress::Unix {
        socket,
        export: "other".into(),
    };
    let err = NbdClient::connect(&wrong, &[]).await.unwrap_err();
    assert!(err.to_string().contains("export not found"), "{err}");
    server.stop().await.unwrap();
}

#[test]
fn address_parsing() {
    let tcp = |host: &str, port, export: &str| NbdAddress::Tcp {
        host: host.into(),
        port,
        export: export.into(),
    };
    let unix = |socket: &str, export: &str| NbdAddress::Unix {
        socket: socket.into(),
        export: export.into(),
    };
    let good = [
        ("nbd://localhost/disk", tcp("localhost", 10809, "disk")),
        (
            "nbd://10.0.0.5:10810/vm1-disk0",
            tcp("10.0.0.5", 10810, "vm1-disk0"),
        ),
        ("nbd://[::1]:2000/x", tcp("::1", 2000, "x")),
        ("nbd://[fe80::1]/x", tcp("fe80::1", 10809, "x")),
        ("nbd://host", tcp("host", 10809, "")),
        ("nbd://host/", tcp("host", 10809, "")),
        ("nbd://host/a%20b/c", tcp("host", 10809, "a b/c")),
        (
            "nbd+unix:///disk?socket=/run/lifeboat/x.sock",
            unix("/run/lifeboat/x.sock", "disk"),
        ),
        ("nbd+unix://?socket=/tmp/s", unix("/tmp/s", "")),
        (
            "nbd+unix:///?socket=/tmp/a%20b.sock",
            unix("/tmp/a b.sock", ""),
        ),
    ];
    for (uri, want) in good {
        let got = NbdAddress::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(got, want, "{uri}");
        // Display gives a URI that parses back to the same address.
        assert_eq!(NbdAddress::parse(&got.to_string()).unwrap(), want, "{got}");
    }
    let bad = [
        ("", "expected nbd://"),
        ("localhost:10809", "expected nbd://"),
        ("http://host/x", "unknown scheme"),
        ("nbds://host/x", "TLS"),
        ("nbd://", "missing host"),
        ("nbd:///x", "missing host"),
        ("nbd://host:0/x", "invalid port"),
        ("nbd://host:99999/x", "invalid port"),
        ("nbd://host:ab/x", "invalid port"),
        ("nbd://[::1/x", "unterminated"),
        ("nbd://user@host/x", "user names"),
        ("nbd://host/x?socket=/s", "no query"),
        ("nbd://host/%zz", "percent escape"),
        ("nbd://host/%ff", "not UTF-8"),
        ("nbd+unix:///disk", "missing ?socket"),
        ("nbd+unix:///disk?socket=", "unsupported query"),
        ("nbd+unix://host/disk?socket=/s", "no host"),
        ("nbd+unix:///x?socket=/s&tls=1", "unsupported query"),
    ];
    for (uri, why) in bad {
        let err = NbdAddress::parse(uri).expect_err(uri);
        assert!(
            matches!(err, NbdError::InvalidAddress { .. }),
            "{uri}: {err}"
        );
        assert!(err.to_string().contains(why), "{uri}: {err}");
    }
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; only a reaped process is really gone.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn qemu_nbd_is_gone_after_stop_and_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path(), 16).await;

    let server = QemuNbd::start(&img, Some("qcow2"), None).await.unwrap();
    let pid = server.pid().unwrap();
    let NbdAddress::Unix { socket, .. } = server.address() else {
        unreachable!()
    };
    assert!(alive(pid) && socket.exists());
    // A client still connected does not keep it alive.
    let client = NbdClient::connect(&server.address(), &[]).await.unwrap();
    server.stop().await.unwrap();
    assert!(!alive(pid), "qemu-nbd {pid} survived stop()");
    assert!(!socket.parent().unwrap().exists(), "socket dir left behind");
    // The client's requests now fail, retryably, with the reason.
    let err = client.read(0, 4096).await.unwrap_err();
    assert!(
        matches!(err, NbdError::ConnectionLost { .. }) && err.is_retryable(),
        "{err}"
    );
    client.disconnect().await.unwrap();

    let server = QemuNbd::start(&img, Some("qcow2"), None).await.unwrap();
    let pid = server.pid().unwrap();
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "qemu-nbd {pid} survived drop");
}

#[tokio::test]
async fn detects_image_formats() {
    let dir = tempfile::tempdir().unwrap();
    let img = qcow2(dir.path(), 1).await;
    assert_eq!(detect_format(&img).await.unwrap(), "qcow2");
    for fmt in ["raw", "vdi", "vhdx", "vmdk"] {
        let p = dir.path().join(format!("disk.{fmt}"));
        run(
            "qemu-img",
            &["create", "-q", "-f", fmt, p.to_str().unwrap(), "1M"],
        )
        .await;
        assert_eq!(detect_format(&p).await.unwrap(), fmt);
    }
    let err = detect_format(&dir.path().join("missing"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot open image"), "{err}");
}
