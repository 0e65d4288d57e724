use super::*;

fn via(name: &str) -> Via {
    Via::named(name.to_owned()).unwrap()
}

#[test]
fn an_entry_names_the_pseudonym_in_any_position_and_case() {
    let p = b"crossfade-ab12";
    assert!(names(b"1.1 crossfade-ab12", p));
    assert!(names(b"1.0 fred, 1.1 CROSSFADE-AB12 (Crossfade)", p));
    assert!(names(b"2 edge ,HTTP/1.1   crossfade-ab12", p));
    assert!(names(b"1.1 a (x, y), 1.1 crossfade-ab12", p));
}

#[test]
fn other_entries_prefixes_and_comments_do_not() {
    let p = b"crossfade-ab12";
    assert!(!names(b"", p));
    assert!(!names(b"1.1 crossfade-ab123", p));
    assert!(!names(b"1.1 crossfade-ab1", p));
    // The protocol position and comments are not the received-by.
    assert!(!names(b"crossfade-ab12", p));
    assert!(!names(b"1.1 edge (via 1.1 crossfade-ab12, then)", p));
    assert!(!names(b"1.1 edge (a \\) , 1.1 crossfade-ab12)", p));
}

#[test]
fn the_entry_carries_the_received_protocol() {
    let v = via("edge-1");
    assert_eq!(v.value(Version::HTTP_11), "1.1 edge-1");
    assert_eq!(v.value(Version::HTTP_10), "1.0 edge-1");
    assert_eq!(v.value(Version::HTTP_2), "2 edge-1");
    assert_eq!(v.value(Version::HTTP_3), "3 edge-1");
}

#[test]
fn append_keeps_earlier_entries_and_adds_a_line() {
    let v = via("edge-1");
    let mut headers = HeaderMap::new();
    headers.append(VIA, HeaderValue::from_static("1.0 fred, 1.1 p.example.net"));
    assert!(!v.looped(&headers));
    v.append(&mut headers, Version::HTTP_2);
    let lines: Vec<_> = headers.get_all(VIA).iter().collect();
    assert_eq!(lines, ["1.0 fred, 1.1 p.example.net", "2 edge-1"]);
    assert!(v.looped(&headers));
}

#[test]
fn random_pseudonyms_are_tokens_and_differ() {
    let (a, b) = (random_pseudonym(), random_pseudonym());
    assert_ne!(a, b);
    assert_eq!(a.len(), "crossfade-".len() + 16);
    assert_eq!(pseudonym_problem(&a), None);
    assert!(Via::of(&ViaConfig::default()).is_some());
    assert!(Via::of(&ViaConfig::off()).is_none());
}

#[test]
fn a_pseudonym_must_be_a_short_token() {
    let check = |p: &str| {
        let mut problems = Vec::new();
        let config = ViaConfig {
            pseudonym: Some(p.to_owned()),
            ..ViaConfig::default()
        };
        config.check(&mut problems);
        problems
    };
    assert!(check("edge_1.eu").is_empty());
    let problems = check("edge 1");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "via.pseudonym");
    assert!(problems[0].message.contains("token"), "{}", problems[0]);
    assert!(check("").len() == 1);
    assert!(check(&"a".repeat(65)).len() == 1);
    assert!(check("a,b").len() == 1);
    // A non-ASCII character is named whole, not by its first byte (trial 7, G7).
    let accented = check("é");
    assert!(accented[0].message.contains("has 'é'"), "{}", accented[0]);
}

#[tokio::test(start_paused = true)]
async fn the_loop_log_writes_once_per_period_with_the_count() {
    let log = LoopLog::new();
    assert_eq!(log.due(), Some(1));
    assert_eq!(log.due(), None);
    assert_eq!(log.due(), None);
    tokio::time::advance(LOOP_LOG_PERIOD).await;
    assert_eq!(log.due(), Some(3));
    assert_eq!(log.due(), None);
}
