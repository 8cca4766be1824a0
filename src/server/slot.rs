//! A single-threaded one-shot slot: one side fills it, the other awaits it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Inner<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// The receiving end.
pub struct Slot<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

/// The filling end. Dropping it unfilled resolves the slot to `None`.
pub struct Filler<T> {
    inner: Rc<RefCell<Inner<T>>>,
}

pub fn slot<T>() -> (Filler<T>, Slot<T>) {
    let inner = Rc::new(RefCell::new(Inner {
        value: None,
        waker: None,
        closed: false,
    }));
    (
        Filler {
            inner: inner.clone(),
        },
        Slot { inner },
    )
}

impl<T> Filler<T> {
    pub fn fill(self, value: T) {
        let waker = {
            let mut inner = self.inner.borrow_mut();
            inner.value = Some(value);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Filler<T> {
    fn drop(&mut self) {
        let waker = {
            let mut inner = self.inner.borrow_mut();
            inner.closed = true;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Slot<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut inner = self.inner.borrow_mut();
        if let Some(v) = inner.value.take() {
            return Poll::Ready(Some(v));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        inner.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
