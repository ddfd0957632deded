//! The ACME folder on disk: each name's certificate chain (`<name>.crt`, leaf first) and key
//! (`<name>.key`, PKCS#8 PEM), and the account (`account.json`). Written only by the ACME thread,
//! each file atomically (a temp file beside it, fsynced, then renamed), so a reader (the TLS loader, on
//! a reload) sees the old file or the new one, never half of one.

use super::AcmeError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What sluice needs to know of a stored certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCert {
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// The issuer's distinguished name.
    pub issuer: String,
}

/// Reads the leaf of a PEM chain. `Ok(None)` when the file does not exist.
pub fn read_cert(path: &Path) -> Result<Option<StoredCert>, AcmeError> {
    let pem = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AcmeError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse_leaf(&pem).map(Some)
}

/// The first certificate of a PEM chain.
pub fn parse_leaf(pem: &[u8]) -> Result<StoredCert, AcmeError> {
    let bad = |why: String| AcmeError::Certificate(why);
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(format!("{e}")))?;
    if block.label != "CERTIFICATE" {
        return Err(bad(format!("the first PEM block is {:?}", block.label)));
    }
    let x = block.parse_x509().map_err(|e| bad(format!("{e}")))?;
    Ok(StoredCert {
        not_after: x.validity().not_after.timestamp(),
        serial: crate::hex::encode(x.raw_serial()),
        issuer: x.issuer().to_string(),
    })
}

/// Creates the folder (and its parents) if needed, readable by the owner only.
pub fn ensure_dir(dir: &Path) -> Result<(), AcmeError> {
    let io = |source| AcmeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// A file written beside its final path, not yet in place.
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
}

/// Writes `bytes` to a temp file beside `path` (mode 0600) and fsyncs it; `commit` puts it in place.
pub fn stage(path: &Path, bytes: &[u8]) -> Result<Staged, AcmeError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let io = |source| AcmeError::Io {
        path: tmp.clone(),
        source,
    };
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(Staged {
        tmp,
        path: path.to_path_buf(),
    })
}

impl Staged {
    /// Renames the temp file over the final path.
    pub fn commit(self) -> Result<(), AcmeError> {
        std::fs::rename(&self.tmp, &self.path).map_err(|source| AcmeError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the temp name is gone and this fails quietly.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    stage(path, bytes)?.commit()?;
    sync_dir(path)
}

/// Makes the renames in `path`'s folder durable.
pub fn sync_dir(path: &Path) -> Result<(), AcmeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AcmeError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Puts a new key and chain in place: both are staged first, then the key and the chain are renamed,
/// so the pair is mismatched at most between two renames.
pub fn write_pair(crt: &Path, chain: &[u8], key_path: &Path, key: &[u8]) -> Result<(), AcmeError> {
    let k = stage(key_path, key)?;
    let c = stage(crt, chain)?;
    k.commit()?;
    c.commit()?;
    sync_dir(crt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn writes_are_atomic_and_read_back() {
        let dir = std::env::temp_dir().join(format!("sluice-acme-store-{}", std::process::id()));
        ensure_dir(&dir).unwrap();
        let crt = dir.join("a.example.com.crt");
        let key = dir.join("a.example.com.key");
        assert_eq!(read_cert(&crt).unwrap(), None);
        let pem = self_signed("a.example.com");
        write_pair(&crt, pem.as_bytes(), &key, b"key").unwrap();
        let got = read_cert(&crt).unwrap().unwrap();
        assert!(got.not_after > 0);
        assert!(!got.serial.is_empty());
        assert_eq!(std::fs::read(&key).unwrap(), b"key");
        // Nothing but the two files is left behind.
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 2);
        write_atomic(&crt, b"not a certificate").unwrap();
        assert!(matches!(read_cert(&crt), Err(AcmeError::Certificate(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
