//! Turning a distribution's compressed kernel (bzImage, `vmlinuz`) into the plain ELF `vmlinux`
//! that QEMU can start directly through the PVH entry point.
//!
//! Why: under TCG (software emulation) the kernel's own start-up decompressor is slow — Debian's
//! XZ-compressed kernels spend ~3 s in it before the first line of the kernel log — while
//! decompressing on the host takes a fraction of a second, once per kernel. Kernels built with
//! CONFIG_PVH=y (Debian's are) carry the ELF note QEMU needs for `-kernel vmlinux`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

/// The compressed payload inside a bzImage and the tool that decompresses it.
struct Payload<'a> {
    data: &'a [u8],
    tool: &'static [&'static str],
    package: &'static str,
}

/// Finds the payload with the boot protocol's header fields (x86 boot protocol ≥ 2.08):
/// `setup_sects` at 0x1f1, `payload_offset`/`payload_length` at 0x248/0x24c, both relative to
/// the start of the protected-mode code, which follows the (setup_sects + 1) real-mode sectors.
fn payload(image: &[u8]) -> Result<Payload<'_>> {
    ensure!(
        image.len() > 0x250 && &image[0x202..0x206] == b"HdrS",
        "not a bzImage (no HdrS boot header)"
    );
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    ensure!(
        version >= 0x0208,
        "boot protocol {version:#x} predates payload fields"
    );
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let le32 = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap()) as usize;
    let start = (setup_sects + 1) * 512 + le32(0x248);
    let len = le32(0x24c);
    let data = image
        .get(start..start + len)
        .context("payload fields point outside the image")?;
    // Every format but gzip gets the decompressed size appended as 4 raw bytes (gzip's own
    // trailer already ends with it): leave them out so the tools see one clean stream.
    let (tool, package, strip): (&'static [&'static str], &'static str, usize) =
        if data.starts_with(&[0x1f, 0x8b]) {
            (&["gzip", "-dc"], "gzip", 0)
        } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            (&["xz", "-dc"], "xz-utils", 4)
        } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            (&["zstd", "-dcq"], "zstd", 4)
        } else if data.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
            (&["lz4", "-dcq"], "lz4", 4)
        } else if data.starts_with(b"BZh") {
            (&["bzip2", "-dc"], "bzip2", 4)
        } else if data.starts_with(&[0x5d, 0, 0]) {
            (&["xz", "--format=lzma", "-dc"], "xz-utils", 4)
        } else {
            bail!(
                "unknown compression (payload starts with {:02x?})",
                &data[..data.len().min(6)]
            );
        };
    Ok(Payload {
        data: &data[..data.len().saturating_sub(strip)],
        tool,
        package,
    })
}

/// Runs `tool` with `input` on stdin; returns stdout.
fn pipe(tool: &[&str], package: &str, input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {} (install the {package} package)", tool[0]))?;
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Feed stdin from a thread: the tool's output would otherwise fill the pipe and deadlock.
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let fed = feeder.join().expect("stdin feeder thread");
    ensure!(
        out.status.success(),
        "{} failed ({}): {}",
        tool.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    fed.context("writing to the decompressor")?;
    Ok(out.stdout)
}

/// Writes the decompressed ELF kernel of the bzImage `image` to `dest`.
pub fn extract_vmlinux(image: &Path, dest: &Path) -> Result<()> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let payload = payload(&bytes).with_context(|| format!("in {}", image.display()))?;
    let elf = pipe(payload.tool, payload.package, payload.data)
        .with_context(|| format!("decompressing the kernel in {}", image.display()))?;
    ensure!(
        elf.starts_with(b"\x7fELF"),
        "the decompressed kernel of {} is not an ELF file",
        image.display()
    );
    let partial = dest.with_extension("partial");
    std::fs::write(&partial, &elf)?;
    std::fs::rename(&partial, dest)?;
    Ok(())
}

/// The kernel release (`uname -r`) recorded in a bzImage's header (`kernel_version` at 0x20e
/// points to a NUL-terminated string: "6.1.0-50-amd64 (debian-kernel@…) #1 SMP …").
pub fn release(image: &Path) -> Result<String> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    ensure!(
        bytes.len() > 0x210 && &bytes[0x202..0x206] == b"HdrS",
        "{} is not a bzImage",
        image.display()
    );
    let at = usize::from(u16::from_le_bytes([bytes[0x20e], bytes[0x20f]])) + 0x200;
    let text = bytes
        .get(at..)
        .context("kernel_version points outside the image")?;
    let end = text.iter().position(|&b| b == 0 || b == b' ').unwrap_or(0);
    ensure!(end > 0, "{} has no kernel version string", image.display());
    Ok(String::from_utf8_lossy(&text[..end]).into_owned())
}

/// A kernel module's bytes, decompressed when its name ends in .xz, .zst or .gz (busybox's
/// insmod in the initramfs takes plain .ko files only).
pub fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.to_string_lossy();
    if name.ends_with(".ko.xz") {
        pipe(&["xz", "-dc"], "xz-utils", &bytes)
    } else if name.ends_with(".ko.zst") {
        pipe(&["zstd", "-dcq"], "zstd", &bytes)
    } else if name.ends_with(".ko.gz") {
        pipe(&["gzip", "-dc"], "gzip", &bytes)
    } else {
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_bzimage() {
        assert!(payload(&[0u8; 1024]).is_err());
    }

    #[test]
    fn finds_the_payload_and_its_format() {
        // A fake image: 1 setup sector (+ the boot sector), payload at offset 16 of the
        // protected-mode code, xz magic followed by 4 bytes of appended size.
        let mut image = vec![0u8; 4096];
        image[0x1f1] = 1;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&10u32.to_le_bytes());
        let start = 2 * 512 + 16;
        image[start..start + 10].copy_from_slice(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3, 4]);
        let p = payload(&image).unwrap();
        assert_eq!(p.tool[0], "xz");
        assert_eq!(p.data, &[0xfd, b'7', b'z', b'X', b'Z', 0]);
    }
}
