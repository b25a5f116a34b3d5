//! The future a reservation returns: ready at once for a local budget (no allocation), or boxed for a
//! backend that has to ask a shared store.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed future, for backends that wait on something.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The outcome of a reservation, now or later.
#[must_use = "a reservation does nothing until awaited"]
pub enum Reserve<'a, T> {
    /// Known already.
    Ready(Option<T>),
    /// Known once the backend answers.
    Pending(BoxFuture<'a, T>),
}

impl<T> Reserve<'_, T> {
    /// An outcome known now.
    pub fn ready(value: T) -> Self {
        Self::Ready(Some(value))
    }
}

impl<T> Reserve<'_, T> {
    /// The outcome if it is known without waiting; `None` for a backend that has to ask.
    pub fn now(self) -> Option<T> {
        match self {
            Self::Ready(value) => value,
            Self::Pending(_) => None,
        }
    }
}

impl<'a, T> Reserve<'a, T> {
    /// An outcome the backend gives later.
    pub fn pending(future: impl Future<Output = T> + Send + 'a) -> Self {
        Self::Pending(Box::pin(future))
    }
}

impl<T> std::fmt::Debug for Reserve<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ready(_) => "Reserve::Ready",
            Self::Pending(_) => "Reserve::Pending",
        })
    }
}

// `Ready` holds no self-reference and `Pending` is already pinned in its box.
impl<T> Unpin for Reserve<'_, T> {}

impl<T> Future for Reserve<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Self::Ready(value) => match value.take() {
                Some(value) => Poll::Ready(value),
                // Polled after completion: never resolves again, as futures may do.
                None => Poll::Pending,
            },
            Self::Pending(future) => future.as_mut().poll(cx),
        }
    }
}
