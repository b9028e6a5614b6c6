//! Finding the real control-plane binaries the suites run.
//!
//! In order: `BEDSIDE_KUBE_BIN_DIR` (a folder holding `kube-apiserver` and
//! `kube-controller-manager`); the cache under `target/testbed/bin`; the xz copies in
//! `BEDSIDE_TESTBED_DIR` (what `.ci/run` points at), unpacked into the cache; and last, a build
//! from Debian's `kubernetes` source package (`tests/scripts/build-kube-testbed.sh`, about 11
//! minutes on 2 cores), so a machine without any of these still runs every test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HarnessError;

pub const KUBE_VERSION: &str = "v1.20.2";

/// `<workspace>/target/testbed`: shared by every test binary and kept between runs.
pub fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("testbed")
}

/// The path of a Kubernetes control-plane binary, unpacking or building it if need be.
pub fn kube_binary(name: &str) -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("BEDSIDE_KUBE_BIN_DIR") {
        let path = Path::new(&dir).join(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::MissingBinary {
                name: name.into(),
                hint: format!("BEDSIDE_KUBE_BIN_DIR={} holds no {name}", path.display()),
            })
        };
    }

    let cached = cache_dir().join("bin").join(name);
    if cached.is_file() {
        return Ok(cached);
    }
    if let Some(dir) = std::env::var_os("BEDSIDE_TESTBED_DIR") {
        let xz = Path::new(&dir).join(format!("{name}-{KUBE_VERSION}-linux-amd64.xz"));
        if xz.is_file() {
            unpack_xz(&xz, &cached)?;
            return Ok(cached);
        }
    }
    build_from_debian_source()?;
    if cached.is_file() {
        Ok(cached)
    } else {
        Err(HarnessError::MissingBinary {
            name: name.into(),
            hint: "the Debian source build finished without producing it".into(),
        })
    }
}

/// `etcd` from Debian's etcd-server package.
pub fn etcd_binary() -> Result<PathBuf, HarnessError> {
    for candidate in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(candidate).is_file() {
            return Ok(candidate.into());
        }
    }
    Err(HarnessError::MissingBinary {
        name: "etcd".into(),
        hint: "install it with `apt-get install etcd-server` (or run `make test-deps`)".into(),
    })
}

fn unpack_xz(xz: &Path, dest: &Path) -> Result<(), HarnessError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(HarnessError::io("create the testbed cache"))?;
    // Unpack beside the destination and rename, so concurrent test processes never see a
    // half-written binary.
    let partial = parent.join(format!(
        ".{}.{}.partial",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("bin"),
        std::process::id()
    ));
    let out =
        std::fs::File::create(&partial).map_err(HarnessError::io("create the unpacked binary"))?;
    let status = Command::new("xz")
        .arg("-dc")
        .arg(xz)
        .stdout(out)
        .status()
        .map_err(HarnessError::io("run xz (apt-get install xz-utils)"))?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(HarnessError::MissingBinary {
            name: xz.display().to_string(),
            hint: format!("xz -dc failed with {status}"),
        });
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .map_err(HarnessError::io("make the binary executable"))?;
    std::fs::rename(&partial, dest).map_err(HarnessError::io("move the binary into the cache"))
}

fn build_from_debian_source() -> Result<(), HarnessError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-kube-testbed.sh");
    eprintln!(
        "bedside-tests: no prebuilt kube-apiserver {KUBE_VERSION} (set BEDSIDE_TESTBED_DIR or \
         BEDSIDE_KUBE_BIN_DIR to skip this); building it from Debian's source package, which \
         takes about 11 minutes on 2 cores..."
    );
    let status = Command::new("bash")
        .arg(&script)
        .arg(cache_dir())
        .status()
        .map_err(HarnessError::io("run tests/scripts/build-kube-testbed.sh"))?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::MissingBinary {
            name: "kube-apiserver".into(),
            hint: format!("{} failed with {status}", script.display()),
        })
    }
}
