//! A scripted NBD server for what qemu-nbd never does: absurd lengths, error chunks,
//! hanging up with requests in flight. It negotiates like a minimal real server
//! (structured replies, `NBD_OPT_GO`, a 1 MiB export) and then answers each request
//! from a script. A mock only because no real server misbehaves on demand.

use std::sync::Arc;

use lifeboat_hypervisor::nbd::{NbdAddress, NbdClient, NbdError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::task::JoinSet;

const MIB: u64 = 1024 * 1024;

/// What the fake server sends for one request (cookie, offset, length); `None` closes
/// the connection instead.
type Script = fn(u64, u64, u32) -> Option<Vec<u8>>;

fn chunk(flags: u16, kind: u16, cookie: u64, payload: &[u8], claimed_len: u32) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&0x668e_33efu32.to_be_bytes());
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&cookie.to_be_bytes());
    m.extend_from_slice(&claimed_len.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// Negotiates like a minimal server (structured replies, GO with a 1 MiB export), then
/// answers each request by `script`.
async fn fake_server(listener: UnixListener, script: Script) {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut hello = b"NBDMAGICIHAVEOPT".to_vec();
    hello.extend_from_slice(&3u16.to_be_bytes());
    s.write_all(&hello).await.unwrap();
    s.read_u32().await.unwrap();
    let opt_reply = |opt: u32, kind: u32, data: &[u8]| {
        let mut m = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
        m.extend_from_slice(&opt.to_be_bytes());
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        m
    };
    loop {
        let (_magic, opt, len) = (
            s.read_u64().await.unwrap(),
            s.read_u32().await.unwrap(),
            s.read_u32().await.unwrap(),
        );
        let mut data = vec![0; len as usize];
        s.read_exact(&mut data).await.unwrap();
        if opt == 7 {
            let mut info = 0u16.to_be_bytes().to_vec();
            info.extend_from_slice(&MIB.to_be_bytes());
            info.extend_from_slice(&3u16.to_be_bytes());
            s.write_all(&opt_reply(opt, 3, &info)).await.unwrap();
            s.write_all(&opt_reply(opt, 1, &[])).await.unwrap();
            break;
        }
        s.write_all(&opt_reply(
            opt,
            if opt == 8 { 1 } else { (1 << 31) + 1 },
            &[],
        ))
        .await
        .unwrap();
    }
    let mut req = [0u8; 28];
    while s.read_exact(&mut req).await.is_ok() {
        let cookie = u64::from_be_bytes(req[8..16].try_into().unwrap());
        let offset = u64::from_be_bytes(req[16..24].try_into().unwrap());
        let len = u32::from_be_bytes(req[24..28].try_into().unwrap());
        match script(cookie, offset, len) {
            Some(reply) => s.write_all(&reply).await.unwrap(),
            None => return,
        }
    }
}

async fn fake(script: Script) -> (NbdClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fake.sock");
    tokio::spawn(fake_server(UnixListener::bind(&socket).unwrap(), script));
    let addr = NbdAddress::Unix {
        socket,
        export: String::new(),
    };
    (NbdClient::connect(&addr, &[]).await.unwrap(), dir)
}

#[tokio::test]
async fn hostile_server_cannot_make_the_client_allocate_or_hang() {
    // A data chunk claiming ~4 GiB: refused from its header, nothing allocated.
    let (client, _dir) =
        fake(|cookie, offset, _| Some(chunk(1, 1, cookie, &offset.to_be_bytes(), 0xffff_fff0)))
            .await;
    let err = client.read(0, 4096).await.unwrap_err();
    assert!(
        matches!(err, NbdError::Protocol(_)) && !err.is_retryable(),
        "{err}"
    );
    assert!(err.to_string().contains("outside the request"), "{err}");
    // The connection is dropped: nothing after a bad message can be trusted.
    assert!(matches!(
        client.read(0, 4096).await,
        Err(NbdError::Protocol(_))
    ));

    // An error chunk fails that request only, with the server's message.
    let (client, _dir) = fake(|cookie, offset, len| {
        if offset == 0 {
            let mut p = 5u32.to_be_bytes().to_vec();
            p.extend_from_slice(&12u16.to_be_bytes());
            p.extend_from_slice(b"disk on fire");
            Some(chunk(1, (1 << 15) + 1, cookie, &p, p.len() as u32))
        } else {
            let mut p = offset.to_be_bytes().to_vec();
            p.extend(std::iter::repeat_n(0x42, len as usize));
            Some(chunk(1, 1, cookie, &p, p.len() as u32))
        }
    })
    .await;
    let err = client.read(0, 512).await.unwrap_err();
    assert!(
        matches!(err, NbdError::Command { errno: 5, .. }) && !err.is_retryable(),
        "{err}"
    );
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert_eq!(&client.read(4096, 512).await.unwrap()[..], &[0x42; 512][..]);

    // The server vanishes with requests in flight: every one fails, retryably.
    let (client, _dir) = fake(|_, offset, _| {
        if offset < 3 * 4096 {
            Some(Vec::new())
        } else {
            None
        }
    })
    .await;
    let client = Arc::new(client);
    let mut tasks = JoinSet::new();
    for i in 0..4u64 {
        let client = client.clone();
        tasks.spawn(async move { client.read(i * 4096, 4096).await });
    }
    while let Some(r) = tasks.join_next().await {
        let err = r.unwrap().unwrap_err();
        assert!(
            matches!(err, NbdError::ConnectionLost { .. }) && err.is_retryable(),
            "{err}"
        );
    }
}
