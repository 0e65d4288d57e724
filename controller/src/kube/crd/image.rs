//! Pure: whether a string is a container image reference, by the grammar of the reference
//! package of the Docker distribution project (`github.com/distribution/reference`, the one the
//! kubelet's image pulls and `docker pull` parse by), so that a malformed one is refused at once
//! rather than ending as `InvalidImageName` or a rollout past its progress deadline (trial 10,
//! K13).
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path              (at most 255 characters)
//! domain     := host [ ":" port ]                (the first component, when it has "." or ":",
//!                                                 is "localhost", or has an upper-case letter)
//! host       := component [ "." component ]*      component := [A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?
//!             | "[" IPv6 "]"
//! path       := path-component [ "/" path-component ]*
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex                 algorithm := [A-Za-z][A-Za-z0-9]* ( [+._-] [A-Za-z][A-Za-z0-9]* )*
//!                                                 hex := [0-9a-fA-F]{32,}; sha256: exactly 64 of [0-9a-f]
//! ```

/// Longest name (domain and path, without tag and digest), as the reference package allows.
pub const MAX_NAME_LEN: usize = 255;

/// Longest tag.
pub const MAX_TAG_LEN: usize = 128;

/// Checks `reference` against the grammar above.
///
/// # Errors
/// A lower-case message naming the part that is wrong, e.g. `digest "sha256:nothex": sha256 needs
/// 64 lower-case hex digits`, `repository "UPPER/Case" must be lower case`, `tag ":v2" ...`.
pub fn check_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("image reference is empty".to_owned());
    }
    if let Some(c) = reference
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("contains {c:?}"));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    check_name(name)
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("digest {digest:?}: {why}"));
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return bad("expected ALGORITHM:HEX, e.g. sha256:<64 hex digits>");
    };
    let component_ok = |c: &str| {
        let mut chars = c.chars();
        chars.next().is_some_and(|f| f.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric())
    };
    if !algorithm.split(['+', '.', '_', '-']).all(component_ok) {
        return bad("the algorithm is not a name such as sha256");
    }
    if algorithm == "sha256" {
        let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if hex.len() != 64 || !hex.chars().all(lower_hex) {
            return bad("sha256 needs 64 lower-case hex digits");
        }
    } else if hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return bad("needs at least 32 hex digits");
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let ok = chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-')
        && tag.len() <= MAX_TAG_LEN;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?}: one to {MAX_TAG_LEN} of letters, digits, '_', '.', '-', not starting \
             with '.' or '-' (one tag per reference)"
        ))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name is {} characters, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let path = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            check_domain(first)?;
            path
        }
        _ => name,
    };
    if path.is_empty() {
        return Err("repository name is empty".to_owned());
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository {path:?} must be lower case"));
    }
    for component in path.split('/') {
        if !path_component_ok(component) {
            return Err(format!(
                "repository {path:?}: component {component:?} is not lower-case letters and \
                 digits joined by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "registry {domain:?} is not a host name or address with an optional :port"
        ))
    };
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return bad();
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return bad();
        }
        match after {
            "" => ("", None),
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return bad(),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !domain.starts_with('[') && !host.split('.').all(label_ok) {
        return bad();
    }
    if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
        return bad();
    }
    Ok(())
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`.
fn path_component_ok(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes: Vec<char> = component.chars().collect();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Every run of separators between two alphanumeric runs must be one of the four forms.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let run: String = bytes[start..i].iter().collect();
        let ok = run == "." || run == "_" || run == "__" || run.chars().all(|c| c == '-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_the_registries_accept_pass() {
        let hex = "a".repeat(64);
        for ok in [
            "nginx",
            "web:v2",
            "crossfade-sample:v2",
            "library/nginx:1.27.0-alpine",
            "ghcr.io/acme/web:v2",
            "localhost:5000/web",
            "localhost/web:dev",
            "registry.example.com:5000/team/app_x/web__api:1.2",
            "a-b---c.d/e",
            "[::1]:5000/web:v1",
            "Registry.Example.com/web:v1",
            &format!("web@sha256:{hex}"),
            &format!("ghcr.io/acme/web:v2@sha256:{hex}"),
            &format!("web@sha512:{}", "b".repeat(128)),
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn malformed_references_name_the_part_that_is_wrong() {
        let cases = [
            (
                "UPPER/Case::v2@sha256:nothex",
                "digest \"sha256:nothex\": sha256 needs 64 lower-case hex digits",
            ),
            ("Web:v2", "repository \"Web\" must be lower case"),
            ("acme/Web:v2", "repository \"acme/Web\" must be lower case"),
            ("web::v2", "tag \":v2\": one to 128 of"),
            ("web:v2:v3", "tag \"v2:v3\": one to 128 of"),
            ("web:", "tag \"\": one to 128 of"),
            ("web:.v2", "tag \".v2\": one to 128 of"),
            ("web@sha256:abc", "digest \"sha256:abc\": sha256 needs 64"),
            ("web@", "digest \"\": expected ALGORITHM:HEX"),
            ("-web", "repository \"-web\": component \"-web\" is not"),
            ("web_/x", "repository \"web_/x\": component \"web_\" is not"),
            ("we._b", "repository \"we._b\": component \"we._b\" is not"),
            ("a//b", "repository \"a//b\": component \"\" is not"),
            ("ghcr.io/", "repository name is empty"),
            (
                "bad_host.io/web",
                "registry \"bad_host.io\" is not a host name",
            ),
            (
                "host.io:port/web",
                "registry \"host.io:port\" is not a host name",
            ),
            ("", "image reference is empty"),
            ("web\tv2", "contains '\\t'"),
        ];
        for (reference, want) in cases {
            let got = check_reference(reference).expect_err(reference);
            assert!(got.starts_with(want), "{reference}: {got}");
        }
        let long = format!("{}:v1", "a".repeat(256));
        assert!(check_reference(&long)
            .unwrap_err()
            .starts_with("name is 256 characters"));
        let long_tag = format!("web:{}", "v".repeat(129));
        assert!(check_reference(&long_tag).is_err());
    }
}
