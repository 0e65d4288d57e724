use super::*;

fn upstream(kind: ErrorKind) -> Error {
    Error::Upstream {
        route: "web".into(),
        backend: Slot::Green,
        kind,
        source: None,
        endpoint: None,
        attempts: 1,
    }
}

#[test]
fn each_error_maps_to_its_status() {
    assert_eq!(upstream(ErrorKind::ConnectRefused).status(), 502);
    assert_eq!(upstream(ErrorKind::ConnectError).status(), 502);
    assert_eq!(upstream(ErrorKind::Reset).status(), 502);
    assert_eq!(upstream(ErrorKind::Protocol).status(), 502);
    assert_eq!(upstream(ErrorKind::ConnectTimeout).status(), 504);
    assert_eq!(upstream(ErrorKind::ResponseTimeout).status(), 504);
    assert_eq!(Error::NoRoute.status(), 404);
    assert_eq!(
        Error::RouteDisabled {
            route: "web".into()
        }
        .status(),
        503
    );
    let no_endpoint = Error::NoEndpoint {
        route: "web".into(),
        backend: Slot::Blue,
    };
    assert_eq!(no_endpoint.status(), 503);
    assert_eq!(Error::BadRequest("no host").status(), 400);
}

#[test]
fn a_grpc_client_gets_the_mapped_status_and_a_response_timeout_is_deadline_exceeded() {
    for kind in [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::ConnectError,
        ErrorKind::Reset,
        ErrorKind::Protocol,
    ] {
        assert_eq!(upstream(kind).grpc_status(), 14, "{kind:?}");
    }
    assert_eq!(upstream(ErrorKind::ResponseTimeout).grpc_status(), 4);
    assert_eq!(Error::Overloaded(ShedReason::Requests).grpc_status(), 14);
    assert_eq!(Error::NoRoute.grpc_status(), 12);
    let body_timeout = Error::RequestBodyTimeout {
        route: "web".into(),
        backend: Slot::Green,
    };
    assert_eq!(body_timeout.grpc_status(), 2);
    assert_eq!(
        upstream(ErrorKind::Reset).grpc_message(),
        "crossfade: upstream connection reset (route web, backend green)"
    );
}

#[test]
fn body_names_the_failure_route_and_backend() {
    assert_eq!(
        upstream(ErrorKind::ConnectRefused).body(),
        "crossfade: upstream connect refused (route web, backend green)\n"
    );
}

#[test]
fn only_connect_failures_are_safe_to_resend() {
    let safe: Vec<_> = ErrorKind::ALL
        .into_iter()
        .filter(|k| k.is_connect())
        .collect();
    assert_eq!(
        safe,
        [
            ErrorKind::ConnectRefused,
            ErrorKind::ConnectTimeout,
            ErrorKind::ConnectError
        ]
    );
    for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
        assert_eq!(kind.index(), i);
    }
}
