//! A minimal POSIX ustar writer: enough to bundle `cluster diags` files when the `tar`
//! program is not there to make the usual `.tar.gz` (no compression crate is in the tree).

/// One archive member: a directory (`None`) or a regular file with its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub data: Option<Vec<u8>>,
}

const BLOCK: usize = 512;

/// Splits a path into ustar's `prefix` (≤155 bytes) and `name` (≤100 bytes) at a `/`.
fn split_path(path: &str) -> Result<(&str, &str), String> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    for (i, _) in path.match_indices('/') {
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if prefix.len() <= 155 && name.len() <= 100 && !name.is_empty() {
            return Ok((prefix, name));
        }
    }
    Err(format!("{path}: too long for a ustar archive"))
}

fn octal(field: &mut [u8], value: u64) {
    // Zero-padded octal, NUL-terminated, filling the field.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn header(path: &str, size: u64, dir: bool, mtime: u64) -> Result<[u8; BLOCK], String> {
    let mut h = [0u8; BLOCK];
    let (prefix, name) = split_path(path)?;
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], if dir { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    // The checksum is computed with its own field read as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// The archive: each entry's header and contents padded to 512 bytes, then two zero blocks.
pub fn ustar(entries: &[Entry], mtime: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for e in entries {
        match &e.data {
            None => {
                let p = format!("{}/", e.path.trim_end_matches('/'));
                out.extend_from_slice(&header(&p, 0, true, mtime)?);
            }
            Some(data) => {
                out.extend_from_slice(&header(&e.path, data.len() as u64, false, mtime)?);
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
            }
        }
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn headers_carry_ustar_magic_and_a_valid_checksum() {
        let a = ustar(
            &[
                Entry {
                    path: "d".into(),
                    data: None,
                },
                Entry {
                    path: "d/f.txt".into(),
                    data: Some(b"hello\n".to_vec()),
                },
            ],
            0,
        )
        .unwrap();
        assert_eq!(a.len(), 512 * 5);
        assert_eq!(&a[257..263], b"ustar\0");
        assert_eq!(&a[..2], b"d/");
        assert_eq!(&a[512..519], b"d/f.txt");
        assert_eq!(&a[1024..1030], b"hello\n");
        let h = &a[512..1024];
        let mut copy = h.to_vec();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|b| u32::from(*b)).sum();
        let stored = std::str::from_utf8(&h[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
    }

    #[test]
    fn long_paths_use_the_prefix_field() {
        let long = format!("{}/{}", "a".repeat(120), "b".repeat(20));
        let a = ustar(
            &[Entry {
                path: long.clone(),
                data: Some(vec![]),
            }],
            0,
        )
        .unwrap();
        assert_eq!(&a[..20], "b".repeat(20).as_bytes());
        assert_eq!(&a[345..465], "a".repeat(120).as_bytes());
        assert!(split_path(&"c".repeat(300)).is_err());
    }

    #[test]
    fn the_tar_program_reads_the_archive() {
        let Ok(dir) = tempfile::tempdir() else { return };
        let p = dir.path().join("x.tar");
        let a = ustar(
            &[
                Entry {
                    path: "top".into(),
                    data: None,
                },
                Entry {
                    path: "top/one.yaml".into(),
                    data: Some(b"kind: IPPoolList\n".to_vec()),
                },
            ],
            1_700_000_000,
        )
        .unwrap();
        std::fs::write(&p, a).unwrap();
        let Ok(o) = std::process::Command::new("tar").arg("tf").arg(&p).output() else {
            return; // no tar program here: the format tests above still hold
        };
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "top/\ntop/one.yaml\n");
    }
}
