//! `qemu_img` against the real `qemu-img`: info, bitmaps, and the lock a running
//! export holds.

use std::path::Path;

use lifeboat_hypervisor::ToolError;
use lifeboat_hypervisor::qemu_img;
use lifeboat_hypervisor::qemu_nbd::QemuNbd;

async fn create(path: &Path, format: &str, size: &str) {
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .arg(path)
        .arg(size)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn names(info: &qemu_img::ImageInfo) -> Vec<&str> {
    info.bitmaps().iter().map(|b| b.name.as_str()).collect()
}

#[tokio::test]
async fn bitmaps_are_added_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    create(&img, "qcow2", "4M").await;

    let info = qemu_img::info(&img).await.unwrap();
    assert_eq!(
        (info.format.as_str(), info.virtual_size),
        ("qcow2", 4 << 20)
    );
    assert!(info.bitmaps().is_empty());

    qemu_img::add_bitmap(&img, "b0").await.unwrap();
    qemu_img::add_bitmap(&img, "b1").await.unwrap();
    let info = qemu_img::info(&img).await.unwrap();
    assert_eq!(names(&info), ["b0", "b1"]);
    assert!(info.bitmaps().iter().all(|b| !b.in_use()));

    qemu_img::remove_bitmap(&img, "b0").await.unwrap();
    assert_eq!(names(&qemu_img::info(&img).await.unwrap()), ["b1"]);

    let err = qemu_img::remove_bitmap(&img, "b0").await.unwrap_err();
    assert!(matches!(err, ToolError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("b0"), "{err}");

    // Other formats have no bitmaps, and their info says so.
    let raw = dir.path().join("disk.raw");
    create(&raw, "raw", "1M").await;
    let info = qemu_img::info(&raw).await.unwrap();
    assert_eq!((info.format.as_str(), info.bitmaps().len()), ("raw", 0));
}

#[tokio::test]
async fn a_locked_image_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    create(&img, "qcow2", "1M").await;
    let server = QemuNbd::start(&img, Some("qcow2"), None).await.unwrap();
    // Reading still works (--force-share); changing bitmaps needs the write lock.
    assert_eq!(qemu_img::detect_format(&img).await.unwrap(), "qcow2");
    let err = qemu_img::add_bitmap(&img, "b0").await.unwrap_err();
    assert!(matches!(err, ToolError::ImageLocked { .. }), "{err}");
    assert!(!err.is_not_installed());
    server.stop().await.unwrap();
    qemu_img::add_bitmap(&img, "b0").await.unwrap();
}
