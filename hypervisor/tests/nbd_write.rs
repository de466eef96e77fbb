//! NBD writes against a real writable `qemu-nbd`: what the standby fills its qcow2
//! overlays with. Data, zeros and a flush land in the image (read back through a
//! fresh read-only export); a read-only export refuses writes before they are sent.

use std::sync::Arc;

use bytes::Bytes;
use lifeboat_hypervisor::nbd::{NbdClient, NbdError};
use lifeboat_hypervisor::qemu_img::create_qcow2;
use lifeboat_hypervisor::qemu_nbd::QemuNbd;
use tokio::task::JoinSet;

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_zeroes_and_flush_land_in_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let top = dir.path().join("top.qcow2");
    create_qcow2(&base, 8 * MIB, None).await.unwrap();
    // An overlay with a relative backing name, as the standby chain uses.
    create_qcow2(&top, 8 * MIB, Some("base.qcow2"))
        .await
        .unwrap();

    let nbd = QemuNbd::start_writable(&base, "qcow2").await.unwrap();
    let client = NbdClient::connect(&nbd.address(), &[]).await.unwrap();
    assert!(!client.is_read_only());
    client
        .write(0, Bytes::from(vec![0x11; 3 * MIB as usize]))
        .await
        .unwrap();
    client.flush().await.unwrap();
    client.disconnect().await.unwrap();
    nbd.stop().await.unwrap();

    let nbd = QemuNbd::start_writable(&top, "qcow2").await.unwrap();
    let client = Arc::new(NbdClient::connect(&nbd.address(), &[]).await.unwrap());
    // Many writes in flight at once, small (copied into the batch) and large.
    let mut writes = JoinSet::new();
    for i in 0..64u64 {
        let c = client.clone();
        writes.spawn(async move {
            c.write(4 * MIB + i * 4096, Bytes::from(vec![0x22; 4096]))
                .await
        });
    }
    let c = client.clone();
    writes.spawn(async move {
        c.write(6 * MIB, Bytes::from(vec![0x33; MIB as usize]))
            .await
    });
    while let Some(done) = writes.join_next().await {
        done.unwrap().unwrap();
    }
    let client = Arc::into_inner(client).unwrap();
    client.write_zeroes(MIB, MIB).await.unwrap();
    client.flush().await.unwrap();
    client.disconnect().await.unwrap();
    nbd.stop().await.unwrap();

    let nbd = QemuNbd::start(&top, Some("qcow2"), None).await.unwrap();
    let client = NbdClient::connect(&nbd.address(), &[]).await.unwrap();
    let all = client.read(0, 8 * MIB as u32).await.unwrap();
    let expect = |at: u64| match at {
        _ if at < MIB => 0x11,     // from the backing file
        _ if at < 2 * MIB => 0,    // zeroed in the overlay
        _ if at < 3 * MIB => 0x11, // backing again
        _ if (4 * MIB..4 * MIB + 64 * 4096).contains(&at) => 0x22,
        _ if (6 * MIB..7 * MIB).contains(&at) => 0x33,
        _ => 0,
    };
    for (i, &b) in all.iter().enumerate() {
        assert_eq!(b, expect(i as u64), "byte at {i}");
    }
    // Read-only: refused by the client, nothing sent.
    let e = client.write(0, Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(e, NbdError::InvalidRequest(_)), "{e}");
    assert!(client.flush().await.is_err());
    client.disconnect().await.unwrap();
    nbd.stop().await.unwrap();
}
