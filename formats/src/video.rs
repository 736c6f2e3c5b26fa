//! MP4 (H.264) videos from frames, encoded by a system `ffmpeg` (Debian's package, which
//! `scripts/setup-debian.sh ffmpeg` installs): raw RGB frames are piped to it, nothing is downloaded. The file
//! appears only when the encoder finished (written beside it, then renamed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::image::ImageF32;
use crate::{FormatError, Result};

/// The encoder program: `$LRF_FFMPEG`, else `ffmpeg` on `PATH`.
pub fn ffmpeg_program() -> PathBuf {
    std::env::var_os("LRF_FFMPEG").map_or_else(|| PathBuf::from("ffmpeg"), PathBuf::from)
}

/// Whether the encoder runs at all (`ffmpeg -version`).
pub fn ffmpeg_available() -> bool {
    Command::new(ffmpeg_program())
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Frames of one size in, an MP4 out.
pub struct VideoWriter {
    /// Taken by `finish`; `Drop` reaps an unfinished one.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    partial: PathBuf,
    path: PathBuf,
    width: u32,
    height: u32,
}

impl VideoWriter {
    /// Starts encoding `width` × `height` frames at `fps` into `path`. H.264 with yuv420p needs even sizes:
    /// odd ones are padded by a black row or column.
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<VideoWriter> {
        let partial = path.with_extension("partial.mp4");
        let program = ffmpeg_program();
        let mut child = Command::new(&program)
            .args(["-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{width}x{height}"), "-r", &format!("{fps}"), "-i", "-"])
            .args([
                "-vf",
                "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-crf", "18", "-movflags", "+faststart", "-f", "mp4"])
            .arg(&partial)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                FormatError::invalid(
                    path,
                    "video",
                    format!(
                        "cannot start {} ({e}): install Debian's ffmpeg (apt-get install ffmpeg, or \
                         scripts/setup-debian.sh ffmpeg), set LRF_FFMPEG to an ffmpeg binary, or turn videos off",
                        program.display()
                    ),
                )
            })?;
        let stdin = child.stdin.take();
        Ok(VideoWriter {
            child: Some(child),
            stdin,
            partial,
            path: path.to_path_buf(),
            width,
            height,
        })
    }

    /// Appends one frame (3 channels, values in [0, 1], the writer's size).
    pub fn push(&mut self, frame: &ImageF32) -> Result<()> {
        if frame.channels != 3 || frame.width != self.width || frame.height != self.height {
            return Err(FormatError::invalid(
                &self.path,
                "video frame",
                format!(
                    "{}x{} with {} channels, the video is {}x{} RGB",
                    frame.width, frame.height, frame.channels, self.width, self.height
                ),
            ));
        }
        let n = (frame.width * frame.height) as usize;
        let bytes: Vec<u8> = (0..n)
            .flat_map(|i| (0..3).map(move |c| c * n + i))
            .map(|k| (frame.data[k].clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        let stdin = self.stdin.as_mut().expect("open until finish");
        stdin.write_all(&bytes).map_err(|e| FormatError::io(&self.path, e))
    }

    /// Waits for the encoder and moves the finished file into place.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let child = self.child.take().expect("finish runs once");
        let output = child.wait_with_output().map_err(|e| FormatError::io(&self.path, e))?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&self.partial);
            return Err(FormatError::invalid(
                &self.path,
                "video",
                format!(
                    "ffmpeg failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        std::fs::rename(&self.partial, &self.path).map_err(|e| FormatError::io(&self.path, e))
    }
}

impl Drop for VideoWriter {
    fn drop(&mut self) {
        // An unfinished video (an error while rendering) leaves no file behind.
        drop(self.stdin.take());
        let Some(mut child) = self.child.take() else { return };
        let _ = child.kill();
        let _ = child.wait();
        if self.partial.exists() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(width: u32, height: u32, shade: f32) -> ImageF32 {
        ImageF32 {
            channels: 3,
            width,
            height,
            data: vec![shade; (width * height * 3) as usize],
        }
    }

    #[test]
    #[ignore = "needs ffmpeg (scripts/setup-debian.sh); make test runs it where ffmpeg is installed"]
    fn frames_become_an_mp4_that_ffprobe_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.mp4");
        let mut video = VideoWriter::create(&path, 33, 17, 12.0).unwrap();
        for i in 0..6 {
            video.push(&frame(33, 17, i as f32 / 5.0)).unwrap();
        }
        assert!(!path.exists(), "nothing at the final path before finish");
        video.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[4..8], b"ftyp", "an MP4 container");
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=codec_name,nb_read_frames,width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "h264,34,18,6");
    }

    #[test]
    #[ignore = "needs ffmpeg (scripts/setup-debian.sh); make test runs it where ffmpeg is installed"]
    fn a_wrong_frame_size_is_an_error_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.mp4");
        let mut video = VideoWriter::create(&path, 16, 16, 10.0).unwrap();
        let error = video.push(&frame(8, 8, 0.5)).unwrap_err().to_string();
        assert!(error.contains("the video is 16x16"), "{error}");
        drop(video);
        assert!(!path.exists() && !path.with_extension("partial.mp4").exists());
    }
}
