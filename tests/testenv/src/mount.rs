//! SecretMount lays files out as the kubelet mounts a Secret volume: `name -> ..data/name`,
//! with `..data` a symlink to a timestamped directory that each update swaps atomically
//! (a rename), as cert-manager's renewals and rotated tokens arrive in a pod.

use std::path::PathBuf;

/// SecretMount is one mounted Secret in a temporary directory, removed when dropped.
///
/// # Panics
///
/// Its methods panic when the filesystem refuses a step: the test cannot go on.
#[derive(Debug)]
pub struct SecretMount {
    dir: tempfile::TempDir,
    version: u32,
}

impl SecretMount {
    /// new mounts `files` (name, contents).
    #[must_use]
    pub fn new(files: &[(&str, &str)]) -> SecretMount {
        let mut m = SecretMount {
            dir: tempfile::tempdir().expect("a temp dir"),
            version: 0,
        };
        m.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), m.dir.path().join(name))
                .expect("a symlink");
        }
        m
    }

    /// update writes `files` into a new timestamped directory and swaps `..data` to it.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let ts = format!("..2026_12_02_10_00_00.{}", self.version);
        std::fs::create_dir(self.dir.path().join(&ts)).expect("a data dir");
        for (name, text) in files {
            std::fs::write(self.dir.path().join(&ts).join(name), text).expect("writing");
        }
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).expect("a symlink");
        std::fs::rename(&tmp, self.dir.path().join("..data")).expect("the swap");
    }

    /// path is where file `name` is read, through the symlinks.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
