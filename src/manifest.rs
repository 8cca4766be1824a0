//! The data directory's manifest: the store id and the partition count, fixed at first start.
//!
//! Layout of a data directory:
//! ```text
//! evring-data/
//!   MANIFEST          store_id=<32 hex digits>, partitions=<n>, format=1 (one per line)
//!   p0/               partition 0's journal: 0000000000000000.seg, ...
//!   p1/ ...
//! ```
//! The manifest is written once, to a temporary file that is fsynced and renamed, then the
//! directory is fsynced, so a crash leaves either no manifest or a whole one. Later starts
//! read it and keep its partition count whatever the number of cores is then.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::journal::{hex, StoreId};

/// Name of the manifest file inside the data directory.
pub const MANIFEST_FILE: &str = "MANIFEST";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub store_id: StoreId,
    pub partitions: u32,
}

/// Why the manifest could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("cannot use data directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("manifest {path} is malformed: {reason}")]
    Malformed {
        path: PathBuf,
        #[source]
        reason: ManifestFault,
    },
}

/// What is wrong in a manifest's text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestFault {
    #[error("line without '=': {0:?}")]
    NoEquals(String),
    #[error("store_id must be 32 hex digits")]
    StoreId,
    #[error("partitions is not a number")]
    Partitions(#[source] std::num::ParseIntError),
    #[error("partitions must be at least 1")]
    NoPartitions,
    #[error("unsupported manifest format {0}")]
    Format(String),
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    #[error("{0} missing")]
    Missing(&'static str),
}

impl Manifest {
    /// The directory of partition `p`'s journal.
    pub fn partition_dir(data_dir: &Path, p: u32) -> PathBuf {
        data_dir.join(format!("p{p}"))
    }

    /// Reads the manifest of `data_dir`; `Ok(None)` if it has none (offline tools never
    /// create one).
    pub fn load(data_dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = data_dir.join(MANIFEST_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text)
                .map(Some)
                .map_err(|reason| ManifestError::Malformed { path, reason }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ManifestError::Io { path, source }),
        }
    }

    /// Reads the manifest of `data_dir`, or creates one with a random store id and
    /// `partitions` partitions if there is none.
    pub fn load_or_init(data_dir: &Path, partitions: u32) -> Result<Manifest, ManifestError> {
        let io_err = |source| ManifestError::Io {
            path: data_dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(data_dir).map_err(io_err)?;
        let path = data_dir.join(MANIFEST_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|reason| ManifestError::Malformed {
                path: path.clone(),
                reason,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let manifest = Manifest {
                    store_id: random_store_id().map_err(io_err)?,
                    partitions: partitions.max(1),
                };
                manifest.write(data_dir).map_err(io_err)?;
                Ok(manifest)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn parse(text: &str) -> Result<Manifest, ManifestFault> {
        let mut store_id = None;
        let mut partitions = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| ManifestFault::NoEquals(line.to_string()))?;
            match key {
                "store_id" => store_id = Some(parse_hex_id(value)?),
                "partitions" => {
                    let n: u32 = value.parse().map_err(ManifestFault::Partitions)?;
                    if n == 0 {
                        return Err(ManifestFault::NoPartitions);
                    }
                    partitions = Some(n);
                }
                "format" if value == "1" => {}
                "format" => return Err(ManifestFault::Format(value.to_string())),
                _ => return Err(ManifestFault::UnknownKey(key.to_string())),
            }
        }
        Ok(Manifest {
            store_id: store_id.ok_or(ManifestFault::Missing("store_id"))?,
            partitions: partitions.ok_or(ManifestFault::Missing("partitions"))?,
        })
    }

    fn write(&self, data_dir: &Path) -> io::Result<()> {
        let text = format!(
            "store_id={}\npartitions={}\nformat=1\n",
            hex(&self.store_id),
            self.partitions
        );
        crate::durable::replace(&data_dir.join(MANIFEST_FILE), text.as_bytes())
    }
}

fn parse_hex_id(s: &str) -> Result<StoreId, ManifestFault> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ManifestFault::StoreId);
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| ManifestFault::StoreId)?;
    }
    Ok(id)
}

fn random_store_id() -> io::Result<StoreId> {
    let mut id = [0u8; 16];
    io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_created_once_and_keeps_its_partition_count() {
        let dir = tempfile::tempdir().unwrap();
        let first = Manifest::load_or_init(dir.path(), 4).unwrap();
        assert_eq!(first.partitions, 4);
        let again = Manifest::load_or_init(dir.path(), 2).unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn malformed_manifest_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(MANIFEST_FILE),
            "store_id=xyz\npartitions=2\n",
        )
        .unwrap();
        let err = Manifest::load_or_init(dir.path(), 2).unwrap_err();
        assert!(err.to_string().contains("32 hex digits"), "{err}");
    }
}
