//! lrf-formats' PLY writer and reader against plyfile, the library graphdeco's 3D Gaussian Splatting
//! reads and writes its PLY files with (`python/ply_dump.py`): what we write plyfile reads with the
//! 3DGS property names in the 3DGS order and our values bit for bit; what plyfile writes the way
//! 3DGS's `save_ply` does we read back bit for bit; plyfile's ascii and big-endian files are
//! refused with an error naming the file and the format.
//!
//! Every float crosses the process boundary as its bit pattern, so the comparisons are exact. All
//! values of a field are distinct, so any permutation of properties (in particular an `f_rest`
//! order that is coefficient-major instead of 3DGS's channel-major) fails the checks.

use std::ffi::OsStr;

use lrf_formats::{GaussianPly, read_ply, write_ply};
use lrf_tests::{python_with, run_script_json};
use serde_json::Value;

/// Runs `python/ply_dump.py` with `args` under the plyfile interpreter and parses its JSON.
fn ply_dump(args: &[&OsStr]) -> Value {
    run_script_json(&python_with(&["plyfile", "numpy"]), "ply_dump.py", args)
}

fn u32s(value: &Value, what: &str) -> Vec<u32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array, got {value}"))
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or_else(|| panic!("{what}: expected a 32-bit pattern, got {v}"))
        })
        .collect()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A field whose values are all distinct (finite, exactly representable), so that any mix-up of
/// positions shows.
fn distinct_field(n: usize, channels: usize, sh_coeffs: usize, salt: u64) -> GaussianPly {
    let mut counter = salt * 100_000;
    let mut next = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| {
                counter += 1;
                // A bijection of 0..1_000_003; below 2^22, times 0.25, negated on odd values: exact.
                let v = (counter * 7919) % 1_000_003;
                let v = v as f32 * 0.25;
                if counter % 2 == 1 { -v } else { v }
            })
            .collect()
    };
    GaussianPly {
        means: next(3 * n),
        log_scales: next(3 * n),
        quats: next(4 * n),
        opacity_logits: next(n),
        colors: next(n * sh_coeffs * channels),
        sh_coeffs,
        channels,
    }
}

/// The 3DGS property names, written out here independently of lrf-formats.
fn expected_names(channels: usize, sh_coeffs: usize) -> Vec<String> {
    let mut names = vec!["x", "y", "z", "nx", "ny", "nz"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for i in 0..channels {
        names.push(format!("f_dc_{i}"));
    }
    for i in 0..(sh_coeffs - 1) * channels {
        names.push(format!("f_rest_{i}"));
    }
    names.push("opacity".into());
    for i in 0..3 {
        names.push(format!("scale_{i}"));
    }
    for i in 0..4 {
        names.push(format!("rot_{i}"));
    }
    names
}

/// Vertex `i` of `field` as 3DGS lays it out. `channel_major` false gives the wrong,
/// coefficient-major f_rest order, to show that the comparison tells the two apart.
fn expected_row(field: &GaussianPly, i: usize, channel_major: bool) -> Vec<u32> {
    let (k, c) = (field.sh_coeffs, field.channels);
    let color = |coeff: usize, ch: usize| field.colors[(i * k + coeff) * c + ch];
    let mut row = Vec::new();
    row.extend_from_slice(&field.means[3 * i..3 * i + 3]);
    row.extend_from_slice(&[0.0; 3]);
    row.extend((0..c).map(|ch| color(0, ch)));
    let mut rest = vec![0.0; (k - 1) * c];
    for ch in 0..c {
        for coeff in 1..k {
            let index = if channel_major {
                ch * (k - 1) + (coeff - 1)
            } else {
                (coeff - 1) * c + ch
            };
            rest[index] = color(coeff, ch);
        }
    }
    row.extend(rest);
    row.push(field.opacity_logits[i]);
    row.extend_from_slice(&field.log_scales[3 * i..3 * i + 3]);
    row.extend_from_slice(&field.quats[4 * i..4 * i + 4]);
    bits(&row)
}

fn check_written_by_us(channels: usize, sh_coeffs: usize) {
    let n = 41;
    let field = distinct_field(n, channels, sh_coeffs, (channels * 100 + sh_coeffs) as u64);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("ours_c{channels}_k{sh_coeffs}.ply"));
    write_ply(&path, &field).unwrap_or_else(|e| panic!("write_ply: {e}"));
    let dump = ply_dump(&["read".as_ref(), path.as_os_str()]);
    let label = format!("C={channels} K={sh_coeffs}");

    assert_eq!(dump["format"], "binary_little_endian", "{label}: format");
    assert_eq!(dump["elements"], serde_json::json!(["vertex"]), "{label}: elements");
    assert_eq!(dump["count"], n, "{label}: vertex count");
    let properties = dump["properties"].as_array().expect("properties");
    let names: Vec<&str> = properties.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        expected_names(channels, sh_coeffs),
        "{label}: property names and order"
    );
    for p in properties {
        assert_eq!(p["type"], "float32", "{label}: property {}", p["name"]);
    }

    let rows = dump["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), n);
    for (i, row) in rows.iter().enumerate() {
        let row = u32s(row, "row");
        assert_eq!(
            row,
            expected_row(&field, i, true),
            "{label}: vertex {i} as plyfile reads it"
        );
        // The check above is sharp enough to catch a coefficient-major f_rest (the two orders
        // coincide only with one channel or at most one f_rest coefficient per channel).
        if channels > 1 && sh_coeffs > 2 {
            assert_ne!(row, expected_row(&field, i, false), "{label}: vertex {i}");
        }
    }

    // The field rebuilt the way 3DGS's load_ply does it.
    let theirs = &dump["field"];
    assert_eq!(theirs["channels"], channels, "{label}: channels by load_ply");
    assert_eq!(theirs["sh_coeffs"], sh_coeffs, "{label}: sh_coeffs by load_ply");
    assert_eq!(u32s(&theirs["xyz"], "xyz"), bits(&field.means), "{label}: means");
    assert_eq!(
        u32s(&theirs["opacity"], "opacity"),
        bits(&field.opacity_logits),
        "{label}: opacity"
    );
    assert_eq!(
        u32s(&theirs["scale"], "scale"),
        bits(&field.log_scales),
        "{label}: scales"
    );
    assert_eq!(
        u32s(&theirs["rotation"], "rotation"),
        bits(&field.quats),
        "{label}: rotations"
    );
    assert_eq!(
        u32s(&theirs["features"], "features"),
        bits(&field.colors),
        "{label}: SH features [N, K, C]"
    );
}

#[test]
fn ply_written_by_us_is_read_by_plyfile_3dgs_rgb_degree_3() {
    check_written_by_us(3, 16);
}

#[test]
fn ply_written_by_us_is_read_by_plyfile_32_channels_degree_1() {
    check_written_by_us(32, 4);
}

#[test]
fn ply_written_by_us_is_read_by_plyfile_4_channels_degree_0() {
    check_written_by_us(4, 1);
}

fn check_written_by_plyfile(n: usize, channels: usize, sh_coeffs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("plyfile_c{channels}_k{sh_coeffs}.ply"));
    let args = [n, channels, sh_coeffs, 7].map(|v| v.to_string());
    let mut argv: Vec<&OsStr> = vec!["write".as_ref(), path.as_os_str()];
    argv.extend(args.iter().map(OsStr::new));
    let written = ply_dump(&argv);
    let label = format!("C={channels} K={sh_coeffs}");

    let ours = read_ply(&path).unwrap_or_else(|e| panic!("{label}: read_ply: {e}"));
    assert_eq!(ours.validate(), Ok(()), "{label}");
    assert_eq!(
        (ours.len(), ours.channels, ours.sh_coeffs),
        (n, channels, sh_coeffs),
        "{label}"
    );
    assert_eq!(bits(&ours.means), u32s(&written["xyz"], "xyz"), "{label}: means");
    assert_eq!(
        bits(&ours.opacity_logits),
        u32s(&written["opacity"], "opacity"),
        "{label}: opacity"
    );
    assert_eq!(
        bits(&ours.log_scales),
        u32s(&written["scale"], "scale"),
        "{label}: scales"
    );
    assert_eq!(
        bits(&ours.quats),
        u32s(&written["rotation"], "rotation"),
        "{label}: rotations"
    );
    let features = u32s(&written["features"], "features");
    assert_eq!(bits(&ours.colors), features, "{label}: SH features [N, K, C]");
    // Every value distinct, so the check above rejects any other f_rest order.
    let mut sorted = features.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        features.len(),
        "{label}: plyfile's random features are not distinct"
    );

    // And our writer reproduces plyfile's file byte for byte.
    let again = dir.path().join("again.ply");
    write_ply(&again, &ours).unwrap();
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(&path).unwrap(),
        "{label}: our file differs from plyfile's"
    );
}

#[test]
fn ply_written_by_plyfile_like_3dgs_is_read_by_us_rgb_degree_3() {
    check_written_by_plyfile(37, 3, 16);
}

#[test]
fn ply_written_by_plyfile_like_3dgs_is_read_by_us_32_channels_degree_1() {
    check_written_by_plyfile(37, 32, 4);
}

#[test]
fn ply_written_by_plyfile_empty_field_is_read_by_us() {
    check_written_by_plyfile(0, 3, 16);
}

#[test]
fn ply_ascii_and_big_endian_from_plyfile_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["ascii", "binary_big_endian"] {
        let path = dir.path().join(format!("{format}.ply"));
        ply_dump(&[
            "write".as_ref(),
            path.as_os_str(),
            "5".as_ref(),
            "3".as_ref(),
            "4".as_ref(),
            "1".as_ref(),
            format.as_ref(),
        ]);
        let error = read_ply(&path)
            .expect_err("only binary_little_endian is read")
            .to_string();
        assert!(error.contains(&path.display().to_string()), "{format}: {error}");
        assert!(error.contains(&format!("format {format} 1.0")), "{format}: {error}");
        assert_eq!(
            ply_dump(&["read".as_ref(), path.as_os_str()])["format"],
            format,
            "plyfile's view"
        );
    }
}
