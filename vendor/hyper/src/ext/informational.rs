use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct OnInformational(Arc<dyn OnInformationalCallback + Send + Sync>);

/// Add a callback for 1xx informational responses.
///
/// Crossfade patch 25: a request given two callbacks calls both, in the order they were added.
///
/// # Example
///
/// ```
/// # let some_body = ();
/// let mut req = hyper::Request::new(some_body);
///
/// hyper::ext::on_informational(&mut req, |res| {
///     println!("informational: {:?}", res.status());
/// });
///
/// // send request on a client connection...
/// ```
pub fn on_informational<B, F>(req: &mut http::Request<B>, callback: F)
where
    F: Fn(Response<'_>) + Send + Sync + 'static,
{
    on_informational_raw(req, OnInformationalClosure(callback));
}

pub(crate) fn on_informational_raw<B, C>(req: &mut http::Request<B>, callback: C)
where
    C: OnInformationalCallback + Send + Sync + 'static,
{
    // Crossfade patch 25: a second callback is called after the first, not instead of it.
    let callback = OnInformational(Arc::new(callback));
    let callback = match req.extensions_mut().remove::<OnInformational>() {
        Some(first) => OnInformational::both(first, callback),
        None => callback,
    };
    req.extensions_mut().insert(callback);
}

// Sealed, not actually nameable bounds
pub(crate) trait OnInformationalCallback {
    fn on_informational(&self, res: http::Response<()>);
}

impl OnInformational {
    pub(crate) fn call(&self, res: http::Response<()>) {
        self.0.on_informational(res);
    }

    /// Crossfade patch 25: a request's own callback and then its connection's.
    pub(crate) fn both(first: OnInformational, then: OnInformational) -> OnInformational {
        OnInformational(Arc::new(Both(first, then)))
    }

    /// Crossfade patch 25: a connection's callback.
    pub(crate) fn new<F>(callback: F) -> OnInformational
    where
        F: Fn(Response<'_>) + Send + Sync + 'static,
    {
        OnInformational(Arc::new(OnInformationalClosure(callback)))
    }
}

impl std::fmt::Debug for OnInformational {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnInformational")
    }
}

/// Crossfade patch 25: two callbacks, each given the response.
struct Both(OnInformational, OnInformational);

impl OnInformationalCallback for Both {
    fn on_informational(&self, res: http::Response<()>) {
        let mut copy = http::Response::new(());
        *copy.status_mut() = res.status();
        *copy.version_mut() = res.version();
        *copy.headers_mut() = res.headers().clone();
        self.0.call(copy);
        self.1.call(res);
    }
}

struct OnInformationalClosure<F>(F);

impl<F> OnInformationalCallback for OnInformationalClosure<F>
where
    F: Fn(Response<'_>) + Send + Sync + 'static,
{
    fn on_informational(&self, res: http::Response<()>) {
        let res = Response(&res);
        (self.0)(res);
    }
}

// A facade over http::Response.
//
// It purposefully hides being able to move the response out of the closure,
// while also not being able to expect it to be a reference `&Response`.
// (Otherwise, a closure can be written as `|res: &_|`, and then be broken if
// we make the closure take ownership.)
//
// With the type not being nameable, we could change from being a facade to
// being either a real reference, or moving the http::Response into the closure,
// in a backwards-compatible change in the future.
#[derive(Debug)]
pub struct Response<'resp>(&'resp http::Response<()>);

impl Response<'_> {
    #[inline]
    pub fn status(&self) -> http::StatusCode {
        self.0.status()
    }

    #[inline]
    pub fn version(&self) -> http::Version {
        self.0.version()
    }

    #[inline]
    pub fn headers(&self) -> &http::HeaderMap {
        self.0.headers()
    }
}
