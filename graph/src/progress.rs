//! Progress bars, one per stage (instances done / total, elapsed, rate); drawn on stderr only
//! when it is a terminal, so logs and CI output stay clean.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: Vec<ProgressBar>,
}

impl Progress {
    /// One bar per `(stage id, instances)`; `visible: false` draws nothing.
    pub fn new(stages: &[(String, usize)], visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let width = stages.iter().map(|(id, _)| id.len()).max().unwrap_or(0);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:>{width}}} [{{bar:30}}] {{pos}}/{{len}} {{elapsed}} ({{per_sec}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bars = stages
            .iter()
            .map(|(id, n)| {
                let bar = multi.add(ProgressBar::new(*n as u64));
                bar.set_style(style.clone());
                bar.set_prefix(id.clone());
                bar
            })
            .collect();
        Progress { bars }
    }

    /// Shows what a stage is working on now.
    pub fn started(&self, stage: usize, what: &str) {
        self.bars[stage].set_message(what.to_owned());
    }

    pub fn finished(&self, stage: usize) {
        let bar = &self.bars[stage];
        bar.inc(1);
        if bar.position() >= bar.length().unwrap_or(0) {
            bar.finish_with_message("done");
        }
    }
}
