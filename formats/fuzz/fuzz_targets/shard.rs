//! Safetensors shards on arbitrary bytes: opening and reading every tensor (borrowed from the map, and
//! copied) never panics; errors name the file; what is accepted holds exactly shape × element size.
//! The same bytes as a scene's `points.safetensors` go through `Points::read`, which must keep its
//! promises (track indices in range, one colour per position).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lrf_formats::shard::{Dtype, ShardReader};
use lrf_formats::views::Points;

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

fuzz_target!(|data: &[u8]| {
    let file = "shard.safetensors";
    let path = common::scratch_file(file);
    std::fs::write(&path, data).expect("write input");
    match ShardReader::open(&path) {
        Err(err) => common::check_error(&err, file),
        Ok(reader) => {
            let names: Vec<String> = reader.names().map(str::to_owned).collect();
            for name in &names {
                let shape = reader.shape(name).expect("listed names have shapes").to_vec();
                let count = element_count(&shape).expect("accepted shapes fit in memory");
                let borrowed = match reader.dtype(name).expect("listed names have dtypes") {
                    Dtype::F32 => reader.f32(name).map(|v| v.len()),
                    Dtype::F64 => reader.values::<f64>(name).map(|v| v.len()),
                    Dtype::U8 => reader.values::<u8>(name).map(|v| v.len()),
                    Dtype::I64 => reader.values::<i64>(name).map(|v| v.len()),
                    _ => Ok(count),
                };
                match borrowed {
                    Ok(len) => assert_eq!(len, count, "{name}: {len} values for shape {shape:?}"),
                    Err(err) => common::check_error(&err, file),
                }
                if let Ok(values) = reader.to_vec_f32(name) {
                    assert_eq!(values.len(), count);
                }
            }
            assert!(reader.shape("no such tensor \u{1}").is_err());
        }
    }
    let dir = common::scratch_file("points");
    std::fs::create_dir_all(&dir).expect("points folder");
    std::fs::write(dir.join("points.safetensors"), data).expect("write points");
    if let Ok(points) = Points::read(&dir) {
        assert_eq!(points.colors.len(), points.positions.len());
        assert_eq!(points.track_view.len(), points.track_point.len());
        assert_eq!(points.track_pixel.len(), points.track_point.len());
        assert!(points.track_point.iter().all(|&i| 0 <= i && (i as usize) < points.positions.len()));
    }
});
