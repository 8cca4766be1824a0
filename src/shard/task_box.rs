//! Spawning a request's task without a fresh allocation the size of its future.
//!
//! The connection loop runs every request in a task of its own (but appends it can place
//! at once, `src/server/placed.rs`). A request's future is large
//! (1.8 KB for a native request, 3.1 KB for a RESP command: every kind of request it may run
//! is a state of it), and glommio boxes a spawned future and then allocates the task with a
//! copy of it: two allocations above the allocator's per-thread cache and two copies per
//! request, about 8% of a shard's time at 50 connections × 16 requests in flight.
//!
//! [`spawn_reused`] puts the future in a box taken from the shard's spare boxes of that
//! future type (one allocation the first time, none after), and spawns a small future that
//! polls it in place. When the request is done its future is dropped in place and the empty
//! box goes back to the spares, up to [`SPARE_BOXES_MAX`] per type; beyond that it is freed.
//! A future may be at most [`TASK_BOX_BYTES_MAX`] bytes (checked when it is compiled), so the
//! spares of a type hold at most `SPARE_BOXES_MAX × TASK_BOX_BYTES_MAX` bytes.
//!
//! Invariant: a box holds a future only while the task that polls it runs; a spare box holds
//! none. A future is never moved once polled: it is polled only through its box and dropped
//! in place before the box is reused.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The most spare boxes a shard keeps per future type (docs/OPERATIONS.md, *Memory budget*:
/// at most this many × [`TASK_BOX_BYTES_MAX`] per type).
pub const SPARE_BOXES_MAX: usize = 512;

/// The largest future [`spawn_reused`] takes, checked at compile time: the bound the memory
/// budget counts each spare box at. A request future that outgrows it fails the build; box
/// its rare large parts (as `Shard::run_op` does) rather than raise it.
pub const TASK_BOX_BYTES_MAX: usize = 4096;

thread_local! {
    /// This shard's spare boxes, by future type: each a `Box<Option<F>>` holding `None`.
    static SPARES: RefCell<HashMap<TypeId, Vec<Box<dyn Any>>>> = RefCell::new(HashMap::new());
}

/// Spawns `future` as a detached task on this thread's executor, in a reused box; `guard`
/// is dropped right after the future, once it is done (a request's in-flight permits).
///
/// The guard is not moved into an `async` block around the future: such a block keeps the
/// future twice, as the value it captured and as the one it awaits, which doubled every
/// request's task.
pub fn spawn_reused<F: Future<Output = ()> + 'static, G: Unpin + 'static>(future: F, guard: G) {
    const {
        assert!(
            std::mem::size_of::<Option<F>>() <= TASK_BOX_BYTES_MAX,
            "a request future larger than TASK_BOX_BYTES_MAX"
        )
    };
    let mut slot = take_spare::<F>().unwrap_or_else(|| Box::new(None));
    assert!(slot.is_none(), "a spare box holds no future");
    *slot = Some(future);
    glommio::spawn_local(InBox {
        slot: Some(slot),
        guard: Some(guard),
    })
    .detach();
}

/// A spare box for futures of type `F`, if the shard has one.
fn take_spare<F: 'static>() -> Option<Box<Option<F>>> {
    SPARES.with(|s| {
        let spare = s.borrow_mut().get_mut(&TypeId::of::<F>())?.pop()?;
        Some(
            spare
                .downcast::<Option<F>>()
                .expect("spares are filed by their type"),
        )
    })
}

/// Keeps an emptied box for the next future of type `F`, or frees it beyond the bound.
fn give_back<F: 'static>(slot: Box<Option<F>>) {
    assert!(slot.is_none(), "a box goes back empty");
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        let spares = s.entry(TypeId::of::<F>()).or_default();
        if spares.len() < SPARE_BOXES_MAX {
            spares.push(slot);
        }
    });
}

/// The spare boxes this thread keeps of `F`'s type.
#[cfg(test)]
fn spares_of<F: 'static>(_: &F) -> usize {
    SPARES.with(|s| s.borrow().get(&TypeId::of::<F>()).map_or(0, Vec::len))
}

/// The task's future: polls the boxed one in place; once it is done, drops it there and
/// gives the box back.
struct InBox<F: Future<Output = ()> + 'static, G> {
    slot: Option<Box<Option<F>>>,
    guard: Option<G>,
}

impl<F: Future<Output = ()> + 'static, G: Unpin> Future for InBox<F, G> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // `InBox` is `Unpin` (it holds a box and an `Unpin` guard), so it may be borrowed
        // mutably.
        let this = &mut *self;
        let slot: &mut Option<F> = this.slot.as_deref_mut().expect("polled after it finished");
        let future: &mut F = slot.as_mut().expect("the box holds its future until done");
        // SAFETY: the future lives in a heap box that is never moved out of while it holds
        // the future: the future is only polled here, and it is dropped in place (below, or
        // with the box) before the box's memory is used again. So it stays pinned.
        let pinned = unsafe { Pin::new_unchecked(future) };
        match pinned.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let mut slot = this.slot.take().expect("checked above");
                // Dropped in place, as pinning requires, before the box is reused.
                *slot = None;
                give_back(slot);
                drop(this.guard.take());
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Counts its drops, so a test sees each future dropped exactly once.
    struct Drops(Rc<Cell<u32>>);
    impl Drop for Drops {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn a_finished_task_gives_its_box_back_and_the_next_reuses_it() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let drops = Rc::new(Cell::new(0));
                let ran = Rc::new(Cell::new(0));
                let make = |drops: &Rc<Cell<u32>>, ran: &Rc<Cell<u32>>| {
                    let (d, r) = (Drops(drops.clone()), ran.clone());
                    async move {
                        // A suspension point, so the future is polled twice in its box.
                        futures_lite::future::yield_now().await;
                        r.set(r.get() + 1);
                        drop(d);
                    }
                };
                let first = make(&drops, &ran);
                assert_eq!(spares_of(&first), 0);
                let guard = Drops(drops.clone());
                spawn_reused(first, guard);
                let probe = make(&drops, &ran);
                for _ in 0..4 {
                    futures_lite::future::yield_now().await;
                }
                assert_eq!((ran.get(), drops.get()), (1, 2), "the future and its guard");
                assert_eq!(spares_of(&probe), 1, "the finished task's box is spare");
                spawn_reused(probe, ());
                assert_eq!(
                    SPARES.with(|s| s.borrow().values().map(Vec::len).sum::<usize>()),
                    0,
                    "the second task took the spare box"
                );
                for _ in 0..4 {
                    futures_lite::future::yield_now().await;
                }
                assert_eq!((ran.get(), drops.get()), (2, 3));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn spares_are_bounded() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let make = || async {};
                let probe = make();
                for _ in 0..SPARE_BOXES_MAX + 10 {
                    give_back::<_>(Box::new(None::<std::future::Ready<()>>));
                }
                assert_eq!(
                    spares_of(&std::future::ready(())),
                    SPARE_BOXES_MAX,
                    "beyond the bound, boxes are freed"
                );
                assert_eq!(spares_of(&probe), 0, "another type has spares of its own");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
