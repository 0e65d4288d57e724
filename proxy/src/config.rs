//! The proxy's configuration: listeners, upstream settings and routes, with validation that names
//! every problem's field path.
