use super::*;
use crate::config::BackendConfig;

fn route(name: &str, blue: &[u16], green: &[u16], weights: Weights) -> RouteConfig {
    let endpoints = |ports: &[u16]| -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect()
    };
    let mut route = RouteConfig {
        name: name.to_owned(),
        blue: BackendConfig {
            endpoints: endpoints(blue),
            ..BackendConfig::default()
        },
        green: BackendConfig {
            endpoints: endpoints(green),
            ..BackendConfig::default()
        },
        ..RouteConfig::default()
    };
    route.set_weights(weights);
    route
}

const FILE: Weights = Weights {
    blue: 10_000,
    green: 0,
};
const SHIFTED: Weights = Weights {
    blue: 0,
    green: 10_000,
};

/// What was saved when `web` (blue 9001, green 9002) ran at [`SHIFTED`] with the file at [`FILE`].
fn saved() -> SavedWeights {
    let live = [route("web", &[9001], &[9002], SHIFTED)];
    SavedWeights::of(
        &live,
        &FileWeights::of(&[route("web", &[9001], &[9002], FILE)]),
    )
}

#[test]
fn saved_weights_of_an_unchanged_route_replace_the_files() {
    let mut file = vec![route("web", &[9001], &[9002], FILE)];
    let outcomes = saved().restore(&mut file);
    assert_eq!(file[0].weights(), SHIFTED);
    assert_eq!(
        outcomes,
        [Restored::Applied {
            route: "web".into(),
            saved: SHIFTED,
            file: FILE
        }]
    );
    assert_eq!(
        outcomes[0].to_string(),
        "route web: weights blue 0%, green 100% restored (the config file says blue 100%, green 0%)"
    );
}

#[test]
fn saved_weights_that_no_longer_fit_are_ignored_and_named() {
    let cases = [
        (route("api", &[9001], &[9002], FILE), "route web: saved weights ignored, the config file's stay: not in the config file"),
        (route("web", &[9001], &[9003], FILE), "green's endpoints changed since they were saved ([127.0.0.1:9002], now [127.0.0.1:9003])"),
        (route("web", &[9001], &[9002], Weights { blue: 5_000, green: 5_000 }), "the file's weights changed since they were saved (blue 100%, green 0%, now blue 50%, green 50%)"),
    ];
    for (file_route, expected) in cases {
        let mut file = vec![file_route.clone()];
        let outcomes = saved().restore(&mut file);
        assert_eq!(file, [file_route], "the file's route stays as it is");
        assert_eq!(outcomes.len(), 1);
        assert!(matches!(outcomes[0], Restored::Ignored { .. }));
        assert!(
            outcomes[0].to_string().contains(expected),
            "{}",
            outcomes[0]
        );
    }
}

#[test]
fn endpoints_in_another_order_are_the_same_backend() {
    let live = [route("web", &[9001, 9003], &[9002], SHIFTED)];
    let saved = SavedWeights::of(
        &live,
        &FileWeights::of(&[route("web", &[9001], &[9002], FILE)]),
    );
    let mut file = vec![route("web", &[9003, 9001], &[9002], FILE)];
    saved.restore(&mut file);
    assert_eq!(file[0].weights(), SHIFTED);
}

#[test]
fn the_document_reads_back_as_written() {
    let text = serde_json::to_string(&saved()).unwrap();
    assert_eq!(
        text,
        r#"{"version":1,"routes":{"web":{"weights":{"blue":0,"green":10000},"file_weights":{"blue":10000,"green":0},"blue":["127.0.0.1:9001"],"green":["127.0.0.1:9002"]}}}"#
    );
    assert_eq!(
        serde_json::from_str::<SavedWeights>(&text).unwrap(),
        saved()
    );
    assert!(serde_json::from_str::<SavedWeights>(r#"{"version":1}"#).is_err());
}
