//! A body forwarded unchanged, frame by frame as it comes, that shows each frame to an
//! [`Observer`] on the way: how the tap copies what it records from the REST bodies and from the
//! messages of gRPC streams it forwards as opaque bytes, without buffering them on the caller's
//! path. A data frame is shown as a `Bytes` handle (a reference count, no copy).

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};
use tonic::codegen::http::HeaderMap;

/// What a [`Tee`] shows its frames to.
pub trait Observer: Send {
    fn data(&mut self, data: &Bytes);
    fn trailers(&mut self, _trailers: &HeaderMap) {}
    /// The body ended (all of it went through; not called when it failed or was dropped early).
    fn end(&mut self);
}

/// `inner`, forwarded unchanged, its frames shown to the observer. `Sync` whatever the inner
/// body is (the inner body sits in a mutex that is only reached through `&mut`).
pub struct Tee<B> {
    inner: Mutex<(B, Option<Box<dyn Observer>>)>,
}

impl<B> Tee<B> {
    pub fn new(inner: B, observer: Option<Box<dyn Observer>>) -> Self {
        Tee {
            inner: Mutex::new((inner, observer)),
        }
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let (inner, observer) = self
            .get_mut()
            .inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(o) = observer {
                    if let Some(data) = frame.data_ref() {
                        o.data(data);
                    } else if let Some(trailers) = frame.trailers_ref() {
                        o.trailers(trailers);
                    }
                }
                // The last frame: a reader that knows the length (hyper, by content-length) may
                // not poll again for the end.
                if inner.is_end_stream() {
                    if let Some(mut o) = observer.take() {
                        o.end();
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(mut o) = observer.take() {
                    o.end();
                }
            }
            // A failed body: what was seen is not a whole message; nothing is recorded.
            Poll::Ready(Some(Err(_))) => *observer = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // The mutex is only ever taken here and in `size_hint`, never held across a call. Not
        // ended while the observer has not seen the end: an empty body is polled once, for it.
        self.inner
            .try_lock()
            .is_ok_and(|g| g.1.is_none() && g.0.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match self.inner.try_lock() {
            Ok(guard) => guard.0.size_hint(),
            Err(_) => SizeHint::default(),
        }
    }
}

/// A body's bytes as they went through, up to a bound: past it the copy is given up (the body
/// itself goes on unchanged).
#[derive(Default)]
pub struct Captured {
    pub chunks: Vec<Bytes>,
    pub len: usize,
    /// More than the bound went through: `chunks` was given up.
    pub overflow: bool,
    /// The whole body went through.
    pub complete: bool,
}

impl Captured {
    /// The bytes, joined; `None` unless the whole body went through within the bound.
    pub fn bytes(&self) -> Option<Bytes> {
        if !self.complete || self.overflow {
            return None;
        }
        Some(match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        })
    }
}

/// Copies a body into a shared [`Captured`], at most `limit` bytes.
pub struct Capture {
    pub into: Arc<Mutex<Captured>>,
    pub limit: usize,
    /// Called once the body ended within the bound.
    pub then: Option<Box<dyn FnOnce() + Send>>,
}

impl Observer for Capture {
    fn data(&mut self, data: &Bytes) {
        let mut c = self.into.lock().unwrap_or_else(|e| e.into_inner());
        if c.overflow {
            return;
        }
        c.len += data.len();
        if c.len > self.limit {
            c.overflow = true;
            c.chunks = Vec::new();
        } else {
            c.chunks.push(data.clone());
        }
    }

    fn end(&mut self) {
        self.into.lock().unwrap_or_else(|e| e.into_inner()).complete = true;
        if let Some(then) = self.then.take() {
            then();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_gives_up_past_its_bound() {
        let into = Arc::new(Mutex::new(Captured::default()));
        let mut c = Capture {
            into: into.clone(),
            limit: 5,
            then: None,
        };
        c.data(&Bytes::from_static(b"abc"));
        c.data(&Bytes::from_static(b"de"));
        c.end();
        assert_eq!(into.lock().unwrap().bytes().as_deref(), Some(&b"abcde"[..]));
        let into = Arc::new(Mutex::new(Captured::default()));
        let mut c = Capture {
            into: into.clone(),
            limit: 4,
            then: None,
        };
        c.data(&Bytes::from_static(b"abc"));
        c.data(&Bytes::from_static(b"de"));
        c.end();
        assert_eq!(into.lock().unwrap().bytes(), None);
    }
}
