//! Gaussian fields as PLY files in the layout of graphdeco's 3D Gaussian Splatting (`save_ply` /
//! `load_ply`), generalised to any number of colour channels.
//!
//! One `vertex` element, every property a little-endian `float`, in this order:
//!
//! ```text
//! x y z nx ny nz f_dc_0 .. f_dc_{C-1} f_rest_0 .. f_rest_{(K-1)*C-1} opacity scale_0 scale_1 scale_2
//! rot_0 rot_1 rot_2 rot_3
//! ```
//!
//! Normals are written as 0 and ignored on reading. `f_dc_c` is coefficient 0 of channel `c`;
//! `f_rest` is channel-major, as 3DGS flattens `features_rest.transpose(1, 2)`: coefficient `k >= 1`
//! of channel `c` is `f_rest_{c*(K-1) + k-1}`. A file with C = 3 and K = 16 is byte for byte what
//! 3DGS writes, so 3DGS viewers open it.
//!
//! The reader finds properties by name, so it accepts them in any order and skips extra scalar
//! properties (and extra scalar-only elements) it does not know. It reads `binary_little_endian`
//! only, and checks the header against the file's size before allocating anything, so a truncated
//! file or a header that lies about its vertex count is an error, never a panic or a huge
//! allocation. Values are kept exactly as stored (NaN and infinities included).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::atomic::write_atomic;
use crate::{FormatError, Result};

/// Numbers of spherical-harmonics coefficients per channel the layout allows: degrees 0 to 3.
pub const SH_COEFFS: [usize; 4] = [1, 4, 9, 16];

/// Longest header the reader accepts. 32 channels of degree-3 SH need about 15 KB.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Vertices decoded per read while loading, so the file is never held in memory twice.
const CHUNK_VERTICES: usize = 1 << 14;

/// A Gaussian field as the 3DGS PLY layout stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GaussianPly {
    /// Centres, `N*3`.
    pub means: Vec<f32>,
    /// `N*3`: PLY `scale_0..2`, in log space as in 3DGS.
    pub log_scales: Vec<f32>,
    /// `N*4`, `w x y z`: PLY `rot_0..3`, not normalised.
    pub quats: Vec<f32>,
    /// `N`: PLY `opacity`, a logit as in 3DGS.
    pub opacity_logits: Vec<f32>,
    /// `N*K*C`, row-major `[N, K, C]`: `K` SH coefficients of each of `C` channels.
    pub colors: Vec<f32>,
    /// `K`, one of [`SH_COEFFS`].
    pub sh_coeffs: usize,
    /// `C`, at least 1.
    pub channels: usize,
}

impl GaussianPly {
    /// The number of Gaussians, `N`.
    pub fn len(&self) -> usize {
        self.opacity_logits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.opacity_logits.is_empty()
    }

    /// Checks that `K` and `C` are allowed and every array holds `N` rows of the right width.
    pub fn validate(&self) -> Result<(), String> {
        if !SH_COEFFS.contains(&self.sh_coeffs) {
            return Err(format!(
                "sh_coeffs is {}; it must be one of {SH_COEFFS:?} (SH degree 0 to 3)",
                self.sh_coeffs
            ));
        }
        if self.channels == 0 {
            return Err("channels is 0; a field needs at least one colour channel".into());
        }
        let n = self.len();
        let color_width = self
            .sh_coeffs
            .checked_mul(self.channels)
            .ok_or_else(|| format!("sh_coeffs {} x channels {} overflows", self.sh_coeffs, self.channels))?;
        for (name, len, width) in [
            ("means", self.means.len(), 3),
            ("log_scales", self.log_scales.len(), 3),
            ("quats", self.quats.len(), 4),
            ("colors", self.colors.len(), color_width),
        ] {
            if n.checked_mul(width) != Some(len) {
                return Err(format!(
                    "{name} holds {len} values; {n} Gaussians (the length of opacity_logits) need {n} x {width}"
                ));
            }
        }
        Ok(())
    }
}

/// The property names of the layout, in file order, for `C` channels and `K` coefficients.
pub fn property_names(channels: usize, sh_coeffs: usize) -> Vec<String> {
    let mut names: Vec<String> = ["x", "y", "z", "nx", "ny", "nz"].map(String::from).into();
    names.extend((0..channels).map(|i| format!("f_dc_{i}")));
    names.extend((0..channels * sh_coeffs.saturating_sub(1)).map(|i| format!("f_rest_{i}")));
    names.push("opacity".into());
    names.extend((0..3).map(|i| format!("scale_{i}")));
    names.extend((0..4).map(|i| format!("rot_{i}")));
    names
}

/// Writes `field` to `path` as a `binary_little_endian 1.0` PLY in the 3DGS layout, atomically.
pub fn write_ply(path: &Path, field: &GaussianPly) -> Result<()> {
    write_described_ply(path, field, &[])
}

/// [`write_ply`] with header `comment` lines, which PLY readers skip and people read: what the
/// channels hold, when they are not RGB. A line break in a comment becomes a space.
pub fn write_described_ply(path: &Path, field: &GaussianPly, comments: &[String]) -> Result<()> {
    field
        .validate()
        .map_err(|message| FormatError::invalid(path, "Gaussian field", message))?;
    let (n, k, c) = (field.len(), field.sh_coeffs, field.channels);
    let names = property_names(c, k);

    let mut header = String::from("ply\nformat binary_little_endian 1.0\n");
    for comment in comments {
        header.push_str("comment ");
        header.push_str(&comment.replace(['\n', '\r'], " "));
        header.push('\n');
    }
    header.push_str(&format!("element vertex {n}\n"));
    for name in &names {
        header.push_str("property float ");
        header.push_str(name);
        header.push('\n');
    }
    header.push_str("end_header\n");

    let row_bytes = names.len() * 4;
    let size = n
        .checked_mul(row_bytes)
        .and_then(|body| body.checked_add(header.len()))
        .ok_or_else(|| FormatError::invalid(path, "Gaussian field", format!("{n} Gaussians are too many")))?;
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(header.as_bytes());
    let mut put = |v: f32| bytes.extend_from_slice(&v.to_le_bytes());
    for i in 0..n {
        field.means[3 * i..3 * i + 3].iter().for_each(|&v| put(v));
        (0..3).for_each(|_| put(0.0));
        let colors = &field.colors[i * k * c..(i + 1) * k * c];
        (0..c).for_each(|ch| put(colors[ch]));
        for ch in 0..c {
            (1..k).for_each(|coeff| put(colors[coeff * c + ch]));
        }
        put(field.opacity_logits[i]);
        field.log_scales[3 * i..3 * i + 3].iter().for_each(|&v| put(v));
        field.quats[4 * i..4 * i + 4].iter().for_each(|&v| put(v));
    }
    debug_assert_eq!(bytes.len(), size);
    write_atomic(path, &bytes)
}

/// The header `comment` lines of a PLY file, without the keyword.
pub fn read_comments(path: &Path) -> Result<Vec<String>> {
    let mut file = std::io::BufReader::new(File::open(path).map_err(|e| FormatError::io(path, e))?);
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    while !header.ends_with(b"end_header\n") {
        if header.len() > MAX_HEADER_BYTES || file.read(&mut byte).map_err(|e| FormatError::io(path, e))? == 0 {
            return Err(FormatError::invalid(path, "PLY header", "no end_header line"));
        }
        header.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&header)
        .lines()
        .filter_map(|line| line.strip_prefix("comment "))
        .map(str::to_string)
        .collect())
}

/// A scalar PLY type's size in bytes, or `None` if the name is not a PLY scalar type.
fn scalar_size(ty: &str) -> Option<usize> {
    Some(match ty {
        "char" | "uchar" | "int8" | "uint8" => 1,
        "short" | "ushort" | "int16" | "uint16" => 2,
        "int" | "uint" | "int32" | "uint32" | "float" | "float32" => 4,
        "double" | "float64" => 8,
        _ => return None,
    })
}

struct Property {
    name: String,
    ty: String,
    offset: usize,
}

struct Element {
    name: String,
    count: u64,
    properties: Vec<Property>,
    /// Bytes per record; `None` when the element has a list property (its size depends on the data).
    row_bytes: Option<usize>,
}

struct Header {
    len: usize,
    elements: Vec<Element>,
}

/// Reads the header: everything up to and including the `end_header` line.
fn read_header(path: &Path, file: &mut File) -> Result<Header> {
    let bad = |line: usize, message: String| FormatError::invalid(path, format!("header line {line}"), message);

    // Read until the end_header line or the size limit.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut line_start = 0;
    let header_len = 'search: loop {
        while let Some(newline) = raw[line_start..].iter().position(|&b| b == b'\n') {
            let line = &raw[line_start..line_start + newline];
            line_start += newline + 1;
            if line.trim_ascii() == b"end_header" {
                break 'search line_start;
            }
        }
        if raw.len() > MAX_HEADER_BYTES {
            return Err(FormatError::invalid(
                path,
                "header",
                format!("no end_header line in the first {MAX_HEADER_BYTES} bytes"),
            ));
        }
        let got = file.read(&mut chunk).map_err(|e| FormatError::io(path, e))?;
        if got == 0 {
            return Err(FormatError::invalid(
                path,
                "header",
                if raw.is_empty() {
                    "the file is empty, not a PLY file".to_string()
                } else {
                    "the file ends before the end_header line".to_string()
                },
            ));
        }
        raw.extend_from_slice(&chunk[..got]);
        if raw.len() >= 3 && !raw.starts_with(b"ply") {
            return Err(FormatError::invalid(
                path,
                "header",
                "not a PLY file (it does not start with \"ply\")",
            ));
        }
    };
    let text = std::str::from_utf8(&raw[..header_len])
        .map_err(|_| FormatError::invalid(path, "header", "the header is not ASCII text"))?;

    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).enumerate();
    match lines.next() {
        Some((_, "ply")) => {}
        _ => {
            return Err(FormatError::invalid(
                path,
                "header",
                "not a PLY file (the first line is not \"ply\")",
            ));
        }
    }
    let mut format_seen = false;
    let mut elements: Vec<Element> = Vec::new();
    for (index, line) in lines {
        let number = index + 1;
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            [] => continue,
            ["comment" | "obj_info", ..] => continue,
            ["end_header"] => break,
            ["format", format, version] => {
                if format_seen {
                    return Err(bad(number, "a second format line".into()));
                }
                if *format != "binary_little_endian" {
                    return Err(bad(
                        number,
                        format!("format {format} {version} is not supported; only binary_little_endian 1.0 is read"),
                    ));
                }
                if *version != "1.0" {
                    return Err(bad(
                        number,
                        format!("PLY version {version} is not supported; only 1.0 is read"),
                    ));
                }
                format_seen = true;
            }
            ["element", name, count] => {
                let count = count
                    .parse::<u64>()
                    .map_err(|_| bad(number, format!("element {name}: count {count:?} is not a whole number")))?;
                elements.push(Element {
                    name: name.to_string(),
                    count,
                    properties: Vec::new(),
                    row_bytes: Some(0),
                });
            }
            ["property", "list", _, _, name] => {
                let element = elements
                    .last_mut()
                    .ok_or_else(|| bad(number, format!("property {name} before any element")))?;
                element.row_bytes = None;
                element.properties.push(Property {
                    name: name.to_string(),
                    ty: "list".into(),
                    offset: usize::MAX,
                });
            }
            ["property", ty, name] => {
                let size =
                    scalar_size(ty).ok_or_else(|| bad(number, format!("property {name}: unknown type {ty:?}")))?;
                let element = elements
                    .last_mut()
                    .ok_or_else(|| bad(number, format!("property {name} before any element")))?;
                let offset = element.row_bytes.unwrap_or(usize::MAX);
                element.row_bytes = element.row_bytes.map(|b| b + size);
                element.properties.push(Property {
                    name: name.to_string(),
                    ty: ty.to_string(),
                    offset,
                });
            }
            _ => return Err(bad(number, format!("cannot parse {line:?}"))),
        }
    }
    if !format_seen {
        return Err(FormatError::invalid(path, "header", "no format line"));
    }
    Ok(Header {
        len: header_len,
        elements,
    })
}

/// Indices `0..` of the properties named `{prefix}{i}`, checked to be exactly `0..count`.
fn numbered(path: &Path, vertex: &Element, prefix: &str) -> Result<Vec<usize>> {
    let mut found: Vec<(usize, usize)> = Vec::new();
    for (position, property) in vertex.properties.iter().enumerate() {
        if let Some(rest) = property.name.strip_prefix(prefix)
            && let Ok(index) = rest.parse::<usize>()
            && rest == index.to_string()
        {
            found.push((index, position));
        }
    }
    found.sort_unstable();
    for (expected, &(index, _)) in found.iter().enumerate() {
        if index != expected {
            return Err(FormatError::invalid(
                path,
                "vertex element",
                format!(
                    "{} properties named {prefix}*, but {prefix}{expected} is missing",
                    found.len()
                ),
            ));
        }
    }
    Ok(found.into_iter().map(|(_, position)| position).collect())
}

/// Reads a PLY file in the 3DGS layout (see the module documentation).
pub fn read_ply(path: &Path) -> Result<GaussianPly> {
    let mut file = File::open(path).map_err(|e| FormatError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    let header = read_header(path, &mut file)?;
    let invalid = |message: String| FormatError::invalid(path, "vertex element", message);

    // Locate the vertex element and the bytes before it.
    let vertex_index = header
        .elements
        .iter()
        .position(|e| e.name == "vertex")
        .ok_or_else(|| FormatError::invalid(path, "header", "no vertex element"))?;
    let mut start = header.len as u64;
    for element in &header.elements[..vertex_index] {
        let row = element.row_bytes.ok_or_else(|| {
            FormatError::invalid(
                path,
                format!("element {}", element.name),
                "has a list property and comes before the vertex element; it cannot be skipped",
            )
        })?;
        start = element
            .count
            .checked_mul(row as u64)
            .and_then(|b| b.checked_add(start))
            .ok_or_else(|| FormatError::invalid(path, format!("element {}", element.name), "its size overflows"))?;
    }
    let vertex = &header.elements[vertex_index];
    let row_bytes = vertex
        .row_bytes
        .ok_or_else(|| invalid("has a list property; the 3DGS layout has scalar properties only".into()))?;

    // Map every value we keep to its property.
    let mut by_name: HashMap<&str, &Property> = HashMap::new();
    for property in &vertex.properties {
        if by_name.insert(&property.name, property).is_some() {
            return Err(invalid(format!("two properties are named {}", property.name)));
        }
    }
    let offset_of = |name: &str| -> Result<usize> {
        let property = by_name
            .get(name)
            .ok_or_else(|| invalid(format!("no property {name}; the 3DGS layout needs it")))?;
        if property.ty != "float" && property.ty != "float32" {
            return Err(invalid(format!(
                "property {name} is {}; the 3DGS layout stores float",
                property.ty
            )));
        }
        Ok(property.offset)
    };
    let dc = numbered(path, vertex, "f_dc_")?;
    let rest = numbered(path, vertex, "f_rest_")?;
    let channels = dc.len();
    if channels == 0 {
        return Err(invalid(
            "no f_dc_* properties; a field needs at least one colour channel".into(),
        ));
    }
    if rest.len() % channels != 0 {
        return Err(invalid(format!(
            "{} f_rest_* properties are not a multiple of the {channels} channels (f_dc_* properties)",
            rest.len()
        )));
    }
    let sh_coeffs = rest.len() / channels + 1;
    if !SH_COEFFS.contains(&sh_coeffs) {
        return Err(invalid(format!(
            "{} f_rest_* properties for {channels} channels make {sh_coeffs} SH coefficients per channel; \
             it must be one of {SH_COEFFS:?}",
            rest.len()
        )));
    }
    let (k, c) = (sh_coeffs, channels);
    let names = |prefix: &str, count: usize| -> Result<Vec<usize>> {
        (0..count).map(|i| offset_of(&format!("{prefix}{i}"))).collect()
    };
    let means_at = [offset_of("x")?, offset_of("y")?, offset_of("z")?];
    let opacity_at = offset_of("opacity")?;
    let scales_at = names("scale_", 3)?;
    let quats_at = names("rot_", 4)?;
    // Colours in [K, C] order: coefficient 0 from f_dc, coefficient k >= 1 of channel ch from
    // f_rest_{ch*(K-1) + k-1}.
    let dc_at = names("f_dc_", c)?;
    let rest_at = names("f_rest_", c * (k - 1))?;
    let mut colors_at = Vec::with_capacity(k * c);
    for coeff in 0..k {
        for ch in 0..c {
            colors_at.push(if coeff == 0 {
                dc_at[ch]
            } else {
                rest_at[ch * (k - 1) + coeff - 1]
            });
        }
    }

    // The header's vertex count must fit the bytes there are before anything is allocated.
    let available = file_len.saturating_sub(start);
    let needed = vertex.count.checked_mul(row_bytes as u64);
    // Elements after the vertices: their size is known unless one has a list property.
    let mut trailing = Some(0u64);
    for element in &header.elements[vertex_index + 1..] {
        trailing = trailing.and_then(|t| {
            let row = element.row_bytes?;
            element.count.checked_mul(row as u64)?.checked_add(t)
        });
    }
    let fits = match (needed, trailing) {
        (Some(needed), Some(trailing)) => needed.checked_add(trailing) == Some(available),
        (Some(needed), None) => needed <= available,
        (None, _) => false,
    };
    if !fits {
        return Err(invalid(format!(
            "the header declares {} vertices of {row_bytes} bytes after {start} bytes of header and \
             earlier elements{}, but the file holds {file_len} bytes",
            vertex.count,
            match trailing {
                Some(0) => String::new(),
                Some(t) => format!(" and {t} bytes of later elements"),
                None => String::new(),
            }
        )));
    }
    let n = usize::try_from(vertex.count).map_err(|_| invalid(format!("{} vertices are too many", vertex.count)))?;

    let mut field = GaussianPly {
        means: Vec::with_capacity(3 * n),
        log_scales: Vec::with_capacity(3 * n),
        quats: Vec::with_capacity(4 * n),
        opacity_logits: Vec::with_capacity(n),
        colors: Vec::with_capacity(n * k * c),
        sh_coeffs: k,
        channels: c,
    };
    file.seek(SeekFrom::Start(start))
        .map_err(|e| FormatError::io(path, e))?;
    let mut buffer = vec![0u8; CHUNK_VERTICES.min(n) * row_bytes];
    let mut done = 0;
    while done < n {
        let rows = CHUNK_VERTICES.min(n - done);
        let chunk = &mut buffer[..rows * row_bytes];
        file.read_exact(chunk).map_err(|e| FormatError::io(path, e))?;
        for row in chunk.chunks_exact(row_bytes) {
            let at = |offset: usize| f32::from_le_bytes(row[offset..offset + 4].try_into().unwrap());
            field.means.extend(means_at.iter().map(|&o| at(o)));
            field.log_scales.extend(scales_at.iter().map(|&o| at(o)));
            field.quats.extend(quats_at.iter().map(|&o| at(o)));
            field.opacity_logits.push(at(opacity_at));
            field.colors.extend(colors_at.iter().map(|&o| at(o)));
        }
        done += rows;
    }
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arbitrary bit patterns (NaNs and infinities included), deterministic per seed.
    fn arbitrary(seed: u64, count: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                f32::from_bits((state >> 16) as u32)
            })
            .collect()
    }

    #[test]
    fn comments_describe_the_field_and_do_not_change_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, described) = (dir.path().join("a.ply"), dir.path().join("b.ply"));
        let f = field(5, 4, 4, 3);
        write_ply(&plain, &f).unwrap();
        let comments = ["lrf-flow latent field".to_string(), "channels 4\nmin 0".to_string()];
        write_described_ply(&described, &f, &comments).unwrap();
        assert_eq!(read_ply(&described).unwrap(), read_ply(&plain).unwrap());
        assert_eq!(
            read_comments(&described).unwrap(),
            ["lrf-flow latent field", "channels 4 min 0"]
        );
        assert!(read_comments(&plain).unwrap().is_empty());
    }

    fn field(n: usize, channels: usize, sh_coeffs: usize, seed: u64) -> GaussianPly {
        GaussianPly {
            means: arbitrary(seed, 3 * n),
            log_scales: arbitrary(seed + 1, 3 * n),
            quats: arbitrary(seed + 2, 4 * n),
            opacity_logits: arbitrary(seed + 3, n),
            colors: arbitrary(seed + 4, n * sh_coeffs * channels),
            sh_coeffs,
            channels,
        }
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    fn assert_bit_exact(a: &GaussianPly, b: &GaussianPly) {
        assert_eq!((a.sh_coeffs, a.channels), (b.sh_coeffs, b.channels));
        assert_eq!(bits(&a.means), bits(&b.means), "means");
        assert_eq!(bits(&a.log_scales), bits(&b.log_scales), "log_scales");
        assert_eq!(bits(&a.quats), bits(&b.quats), "quats");
        assert_eq!(bits(&a.opacity_logits), bits(&b.opacity_logits), "opacity_logits");
        assert_eq!(bits(&a.colors), bits(&b.colors), "colors");
    }

    fn error_text(path: &Path) -> String {
        let error = read_ply(path).expect_err("reading should fail");
        let text = error.to_string();
        assert!(
            text.contains(&path.display().to_string()),
            "the error does not name the file: {text}"
        );
        text
    }

    /// A header in the 3DGS layout with the given properties, then `body`.
    fn raw_ply(format: &str, count: usize, names: &[String], body: &[u8]) -> Vec<u8> {
        let mut text = format!("ply\nformat {format} 1.0\nelement vertex {count}\n");
        for name in names {
            text.push_str(&format!("property float {name}\n"));
        }
        text.push_str("end_header\n");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn ply_round_trip_is_bit_exact() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (c, k)) in [(3, 16), (4, 1), (32, 4), (1, 9)].into_iter().enumerate() {
            let original = field(57, c, k, 10 * i as u64);
            let path = dir.path().join(format!("field_{c}_{k}.ply"));
            write_ply(&path, &original).unwrap();
            let size = std::fs::metadata(&path).unwrap().len() as usize;
            assert!(size > 57 * property_names(c, k).len() * 4);
            let back = read_ply(&path).unwrap();
            assert_bit_exact(&original, &back);
        }
    }

    #[test]
    fn ply_layout_matches_3dgs() {
        // One Gaussian, C = 2, K = 4, values that say where they come from.
        let (c, k) = (2, 4);
        let field = GaussianPly {
            means: vec![1.0, 2.0, 3.0],
            log_scales: vec![40.0, 41.0, 42.0],
            quats: vec![50.0, 51.0, 52.0, 53.0],
            opacity_logits: vec![30.0],
            // [K, C]: 100 + 10*k + c
            colors: (0..k)
                .flat_map(|kk| (0..c).map(move |cc| (100 + 10 * kk + cc) as f32))
                .collect(),
            sh_coeffs: k,
            channels: c,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layout.ply");
        write_ply(&path, &field).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = "ply\nformat binary_little_endian 1.0\nelement vertex 1\n\
            property float x\nproperty float y\nproperty float z\n\
            property float nx\nproperty float ny\nproperty float nz\n\
            property float f_dc_0\nproperty float f_dc_1\n\
            property float f_rest_0\nproperty float f_rest_1\nproperty float f_rest_2\n\
            property float f_rest_3\nproperty float f_rest_4\nproperty float f_rest_5\n\
            property float opacity\nproperty float scale_0\nproperty float scale_1\nproperty float scale_2\n\
            property float rot_0\nproperty float rot_1\nproperty float rot_2\nproperty float rot_3\n\
            end_header\n";
        assert_eq!(std::str::from_utf8(&bytes[..header.len()]).unwrap(), header);
        let values: Vec<f32> = bytes[header.len()..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        // f_rest is channel-major: channel 0's coefficients 1..3, then channel 1's.
        let expected = [
            1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 100.0, 101.0, 110.0, 120.0, 130.0, 111.0, 121.0, 131.0, 30.0, 40.0, 41.0,
            42.0, 50.0, 51.0, 52.0, 53.0,
        ];
        assert_eq!(values, expected);
    }

    #[test]
    fn ply_empty_field_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.ply");
        let empty = field(0, 3, 16, 1);
        assert!(empty.is_empty());
        write_ply(&path, &empty).unwrap();
        let back = read_ply(&path).unwrap();
        assert_eq!(back.len(), 0);
        assert_bit_exact(&empty, &back);
    }

    #[test]
    fn ply_truncated_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truncated.ply");
        write_ply(&path, &field(10, 3, 4, 2)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let text = error_text(&path);
        assert!(text.contains("declares 10 vertices"), "{text}");
        // Cut inside the header.
        std::fs::write(&path, &bytes[..40]).unwrap();
        let text = error_text(&path);
        assert!(text.contains("ends before the end_header"), "{text}");
        // Trailing bytes are an error too: the header does not describe the file.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 4]);
        std::fs::write(&path, &longer).unwrap();
        error_text(&path);
    }

    #[test]
    fn ply_huge_vertex_count_is_an_error_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lying.ply");
        for count in ["18446744073709551615", "1000000000000", "4611686018427387904"] {
            let names = property_names(3, 1);
            let text = format!(
                "ply\nformat binary_little_endian 1.0\nelement vertex {count}\n{}end_header\n",
                names
                    .iter()
                    .map(|n| format!("property float {n}\n"))
                    .collect::<String>()
            );
            std::fs::write(&path, text).unwrap();
            let text = error_text(&path);
            assert!(text.contains(&format!("declares {count} vertices")), "{text}");
        }
    }

    #[test]
    fn ply_ascii_and_big_endian_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ascii.ply");
        let names = property_names(3, 1);
        for format in ["ascii", "binary_big_endian"] {
            std::fs::write(&path, raw_ply(format, 0, &names, b"")).unwrap();
            let text = error_text(&path);
            assert!(
                text.contains(&format!("format {format} 1.0 is not supported")),
                "{text}"
            );
        }
        std::fs::write(&path, b"not a ply file at all\n").unwrap();
        assert!(error_text(&path).contains("not a PLY file"));
        std::fs::write(&path, b"").unwrap();
        assert!(error_text(&path).contains("empty"));
    }

    #[test]
    fn ply_wrong_f_rest_count_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rest.ply");
        let names_with_rest = |rest: usize| {
            let mut names = property_names(3, 1);
            let at = names.iter().position(|n| n == "opacity").unwrap();
            for i in (0..rest).rev() {
                names.insert(at, format!("f_rest_{i}"));
            }
            names
        };
        // Not a multiple of C.
        std::fs::write(&path, raw_ply("binary_little_endian", 0, &names_with_rest(44), b"")).unwrap();
        assert!(error_text(&path).contains("not a multiple of the 3 channels"));
        // A multiple, but K = 5 is not a square.
        std::fs::write(&path, raw_ply("binary_little_endian", 0, &names_with_rest(12), b"")).unwrap();
        assert!(error_text(&path).contains("make 5 SH coefficients"));
        // K = 25 (degree 4) is beyond the layout.
        std::fs::write(&path, raw_ply("binary_little_endian", 0, &names_with_rest(72), b"")).unwrap();
        assert!(error_text(&path).contains("make 25 SH coefficients"));
        // A gap in the numbering.
        let mut names = names_with_rest(9);
        names.retain(|n| n != "f_rest_4");
        names.push("f_rest_9".into());
        std::fs::write(&path, raw_ply("binary_little_endian", 0, &names, b"")).unwrap();
        assert!(error_text(&path).contains("f_rest_4 is missing"));
    }

    #[test]
    fn ply_missing_or_mistyped_property_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.ply");
        let mut names = property_names(3, 1);
        names.retain(|n| n != "rot_2");
        std::fs::write(&path, raw_ply("binary_little_endian", 0, &names, b"")).unwrap();
        assert!(error_text(&path).contains("no property rot_2"));
        let text = raw_ply("binary_little_endian", 0, &property_names(3, 1), b"");
        let text = String::from_utf8(text)
            .unwrap()
            .replace("float opacity", "double opacity");
        std::fs::write(&path, text).unwrap();
        assert!(error_text(&path).contains("property opacity is double"));
    }

    #[test]
    fn ply_extra_properties_and_any_order_are_read() {
        // Extra properties of other types, reordered properties, CRLF line ends, comments, and a
        // scalar element before the vertices: all read by name.
        let original = field(5, 3, 4, 7);
        let mut names = property_names(3, 4);
        names.reverse();
        let mut header = String::from(
            "ply\r\nformat binary_little_endian 1.0\r\ncomment made by hand\r\nelement camera 2\r\n\
             property double fx\r\nelement vertex 5\r\nproperty uchar red\r\n",
        );
        for name in &names {
            header.push_str(&format!("property float {name}\r\n"));
        }
        header.push_str("property short extra\r\nend_header\r\n");
        let mut bytes = header.into_bytes();
        bytes.extend_from_slice(&[0xAB; 16]);
        let k = 4;
        for i in 0..5 {
            bytes.push(0xFF);
            for name in &names {
                let v = match name.as_str() {
                    "x" | "y" | "z" => original.means[3 * i + (name.as_bytes()[0] - b'x') as usize],
                    "nx" | "ny" | "nz" => 0.0,
                    "opacity" => original.opacity_logits[i],
                    s if s.starts_with("scale_") => original.log_scales[3 * i + s[6..].parse::<usize>().unwrap()],
                    s if s.starts_with("rot_") => original.quats[4 * i + s[4..].parse::<usize>().unwrap()],
                    s if s.starts_with("f_dc_") => original.colors[i * k * 3 + s[5..].parse::<usize>().unwrap()],
                    s if s.starts_with("f_rest_") => {
                        let r = s[7..].parse::<usize>().unwrap();
                        let (ch, coeff) = (r / (k - 1), r % (k - 1) + 1);
                        original.colors[i * k * 3 + coeff * 3 + ch]
                    }
                    _ => unreachable!(),
                };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            bytes.extend_from_slice(&[0x12, 0x34]);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extra.ply");
        std::fs::write(&path, &bytes).unwrap();
        assert_bit_exact(&original, &read_ply(&path).unwrap());
    }

    #[test]
    fn ply_writer_rejects_inconsistent_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.ply");
        let mut bad = field(4, 3, 4, 3);
        bad.colors.pop();
        assert!(bad.validate().unwrap_err().contains("colors holds 47 values"));
        let text = write_ply(&path, &bad).unwrap_err().to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        let mut bad = field(4, 3, 4, 3);
        bad.sh_coeffs = 5;
        assert!(bad.validate().is_err());
        let mut bad = field(0, 3, 4, 3);
        bad.channels = 0;
        assert!(bad.validate().is_err());
        assert!(!path.exists(), "nothing is written for an invalid field");
    }
}
