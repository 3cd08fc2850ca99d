//! The runtime facade: spawning, sleeping and timeouts for code that runs on either event loop
//! (the relay, the client core's driver, the shard's own tasks).
//!
//! A shard runs either the native io_uring engine (`crate::engine`) or a tokio current-thread
//! runtime (the epoll fallback; also `ringrelay send` and `ringload`). Code above this layer
//! never names either: it calls `rt::spawn_local`, `rt::sleep`, `rt::timeout`, and each call
//! goes to the loop of the thread it runs on. Contract: call these only from inside a running
//! loop (a shard, or a tokio runtime); they never block.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::engine;

/// The current time: on the engine, its reading for this loop turn (no clock call per use);
/// elsewhere the clock.
pub fn now() -> Instant {
    engine::now()
}

/// A deadline passed before the future finished (`timeout`, `timeout_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("deadline has elapsed")]
pub struct Elapsed;

/// Runs `future` on this thread's loop, detached; it must end by itself.
pub fn spawn_local<F: Future<Output = ()> + 'static>(future: F) {
    if engine::is_current() {
        engine::spawn_local(future);
    } else {
        drop(tokio::task::spawn_local(future));
    }
}

/// A timer that can be moved to another deadline without being rebuilt.
pub enum Sleep {
    /// On the io_uring engine.
    Engine(engine::Sleep),
    /// On tokio.
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl Sleep {
    /// Moves the deadline.
    pub fn reset(&mut self, deadline: Instant) {
        match self {
            Sleep::Engine(s) => s.reset(deadline),
            Sleep::Tokio(s) => s.as_mut().reset(tokio::time::Instant::from_std(deadline)),
        }
    }

    /// The current deadline.
    pub fn deadline(&self) -> Instant {
        match self {
            Sleep::Engine(s) => s.deadline(),
            Sleep::Tokio(s) => s.deadline().into_std(),
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Sleep::Engine(s) => Pin::new(s).poll(cx),
            Sleep::Tokio(s) => s.as_mut().poll(cx),
        }
    }
}

/// A timer firing at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    if engine::is_current() {
        Sleep::Engine(engine::Sleep::until(deadline))
    } else {
        Sleep::Tokio(Box::pin(tokio::time::sleep_until(
            tokio::time::Instant::from_std(deadline),
        )))
    }
}

/// Waits for `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(far(duration))
}

/// Runs `future` until `deadline`; `Err(Elapsed)` if it had not finished by then (it is then
/// dropped: only use this with futures whose drop is clean on this loop).
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let mut timer = sleep_until(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Runs `future` for at most `duration`.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    timeout_at(far(duration), future).await
}

/// Runs every future to completion, concurrently, on the calling task.
pub async fn join_all<F: Future<Output = ()> + ?Sized>(mut futures: Vec<Pin<Box<F>>>) {
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// `now + duration`, saturating far in the future instead of overflowing.
fn far(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}
