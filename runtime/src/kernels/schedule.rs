//! How a conv/dense call is cut into tasks for the thread pool, and the
//! per-thread scratch buffers tasks reuse between calls (so steady-state
//! runs allocate nothing).

use crate::threads::parallel_for;
use std::cell::RefCell;

/// Per-thread buffers, kept between calls so steady-state runs allocate
/// nothing: packed B panels and the micro-kernel's B row offsets.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) b: Vec<f32>,
    /// `offs[k] = k·nr`: rows of a packed panel.
    pub(super) packed: Vec<usize>,
    /// The rows of a block's last packed panel (see `packed::last_stride`).
    pub(super) packed_last: Vec<usize>,
    /// Output segments of a task's column panels, and where each panel's
    /// start (see `packed::block_task`).
    pub(super) segments: Vec<Segment>,
    pub(super) spans: Vec<usize>,
    /// Source offsets of the columns a task gathers.
    pub(super) cols: Vec<usize>,
    /// The runs a task copies its contiguous columns in (see `packed::pack`).
    pub(super) runs: Vec<Run>,
}

/// The (item, group, column block, row split) tasks of one layer: rows are
/// split only when there are fewer than `target` other tasks (late layers
/// at batch 1): a block is then packed once for all its splits, but each
/// split streams it again.
#[derive(Clone, Copy)]
pub(super) struct Tasks {
    groups: usize,
    col_blocks: usize,
    row_panels: usize,
    row_splits: usize,
    panels_per_split: usize,
    base: usize,
}

/// One task: item index (from 0), group, column block and its row panels.
pub(super) struct Task {
    /// The (item, group, column block) this task splits the rows of,
    /// numbered from 0.
    pub(super) unit: usize,
    pub(super) item: usize,
    pub(super) g: usize,
    pub(super) cb: usize,
    pub(super) panels: std::ops::Range<usize>,
}

impl Tasks {
    pub(super) fn new(
        items: usize,
        groups: usize,
        col_blocks: usize,
        row_panels: usize,
        target: usize,
    ) -> Tasks {
        let base = items * groups * col_blocks;
        let row_splits = target.div_ceil(base).clamp(1, row_panels);
        Tasks {
            groups,
            col_blocks,
            row_panels,
            row_splits,
            panels_per_split: row_panels.div_ceil(row_splits),
            base,
        }
    }

    pub(super) fn count(&self) -> usize {
        self.base * self.row_splits
    }

    /// Tasks per (item, group, column block): consecutive task indices.
    pub(super) fn row_splits(&self) -> usize {
        self.row_splits
    }

    /// Run `f` on every non-empty task, in parallel when there are several.
    pub(super) fn run(&self, f: impl Fn(Task) + Sync) {
        let task = |t: usize| {
            if let Some(task) = self.get(t) {
                f(task)
            }
        };
        match self.count() {
            1 => task(0),
            n => parallel_for(n, task),
        }
    }

    /// Task `t`, or `None` when its row split is empty.
    pub(super) fn get(&self, t: usize) -> Option<Task> {
        let rs = t % self.row_splits;
        let rest = t / self.row_splits;
        let cb = rest % self.col_blocks;
        let rest = rest / self.col_blocks;
        let panels =
            rs * self.panels_per_split..((rs + 1) * self.panels_per_split).min(self.row_panels);
        (!panels.is_empty()).then_some(Task {
            unit: t / self.row_splits,
            item: rest / self.groups,
            g: rest % self.groups,
            cb,
            panels,
        })
    }
}

/// A run of tile columns that lands contiguously in item `item`'s output.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    pub(super) item: usize,
    pub(super) tile_col: usize,
    pub(super) out_col: usize,
    pub(super) len: usize,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Run `f` on this thread's scratch buffers.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// A contiguous run of a block's columns within one item and one column
/// panel: `len` floats from `src` (past a B row's start) go to column
/// `off` of panel `panel`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Run {
    pub(super) panel: usize,
    pub(super) off: usize,
    pub(super) src: usize,
    pub(super) len: usize,
}
