//! Pure: whether a name can name a TrafficShift, given the names Crossfade makes from it.
//!
//! A TrafficShift `web` gets the Services `web-blue` and `web-green`, the preview Deployment
//! `web-green` and the label `crossfade.dev/trafficshift=web` on the preview's pods and on the
//! Services. A Service's name must be a DNS-1035 label (RFC 1035 §2.3.1 as Kubernetes checks it:
//! at most 63 characters of lower-case letters, digits and `-`, starting with a letter and ending
//! with a letter or digit), and a label value at most 63 characters. A TrafficShift, like any
//! custom resource, may have any DNS-1123 subdomain as its name (253 characters, dots, a leading
//! digit), and so may a Deployment, whose name the annotation trigger gives the TrafficShift. Such
//! a name passed every check until the API server refused the first Service at the rollout's
//! start (trial 30): so it is checked here, before anything is made.

/// Longest TrafficShift name: 63 (a DNS-1035 label, a label value) less `-green`.
pub const MAX_SHIFT_NAME_LEN: usize = 63 - "-green".len();

/// The pattern of a TrafficShift's name: a DNS-1035 label (Kubernetes' `IsDNS1035Label`).
pub const SHIFT_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// Longest object name: a DNS-1123 subdomain (Kubernetes' `IsDNS1123Subdomain`).
pub const MAX_OBJECT_NAME_LEN: usize = 253;

/// The pattern of a Deployment's name (`spec.deployment`): a DNS-1123 subdomain, as Kubernetes'
/// `IsDNS1123Subdomain` checks it (its length, [`MAX_OBJECT_NAME_LEN`], apart).
pub const OBJECT_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Checks that `name` can name a TrafficShift: the Services `<name>-blue` and `<name>-green`
/// must be DNS-1035 labels, so `name` must be one of at most [`MAX_SHIFT_NAME_LEN`] characters.
///
/// # Errors
/// A lower-case message saying what is wrong and why it matters, e.g. `"1web" starts with a
/// digit; ...`; it does not name the field (the caller does).
pub fn check_shift_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > MAX_SHIFT_NAME_LEN {
        format!(
            "is {} characters long, more than {MAX_SHIFT_NAME_LEN}",
            name.len()
        )
    } else if let Some(c) = name.chars().find(|c| !is_label_char(*c)) {
        format!("has {c:?}, which is not a lower-case letter, a digit or '-'")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "does not start with a lower-case letter".to_owned()
    } else if name.ends_with('-') {
        "ends with '-'".to_owned()
    } else {
        return Ok(());
    };
    Err(format!(
        "{name:?} {why}: crossfade names the Services {name}-blue and {name}-green after it, which \
         must be DNS-1035 labels (at most 63 lower-case letters, digits and '-', starting with a \
         letter), so a trafficshift's name must be one of at most {MAX_SHIFT_NAME_LEN} characters"
    ))
}

/// Checks that `name` can name a Deployment: a DNS-1123 subdomain (at most
/// [`MAX_OBJECT_NAME_LEN`] characters of dot-separated lower-case labels), as Kubernetes checks
/// object names.
///
/// # Errors
/// A lower-case message saying what is wrong, without the field.
pub fn check_object_name(name: &str) -> Result<(), String> {
    let why = match subdomain_problem(name) {
        None => return Ok(()),
        Some(Subdomain::Empty) => "is empty".to_owned(),
        Some(Subdomain::TooLong(len)) => {
            format!("is {len} characters long, more than {MAX_OBJECT_NAME_LEN}")
        }
        Some(Subdomain::BadChar(c)) => {
            format!("has {c:?}, which is not a lower-case letter, a digit, '-' or '.'")
        }
        Some(Subdomain::BadPart) => {
            "has a part between dots that is empty or starts or ends with '-'".to_owned()
        }
    };
    Err(format!(
        "{name:?} {why}: no deployment can have this name (a DNS-1123 subdomain)"
    ))
}

/// What keeps a name from being a DNS-1123 subdomain (RFC 1123 as Kubernetes checks object
/// names, `IsDNS1123Subdomain`), for each caller to word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subdomain {
    /// No character at all.
    Empty,
    /// Longer than [`MAX_OBJECT_NAME_LEN`]; the length in bytes.
    TooLong(usize),
    /// A character other than a lower-case letter, a digit, `-` or `.`.
    BadChar(char),
    /// A `.`-separated part that is empty or starts or ends with `-`.
    BadPart,
}

/// The first reason `name` is not a DNS-1123 subdomain, in the order empty, length,
/// characters, parts; `None` when it is one.
pub fn subdomain_problem(name: &str) -> Option<Subdomain> {
    if name.is_empty() {
        Some(Subdomain::Empty)
    } else if name.len() > MAX_OBJECT_NAME_LEN {
        Some(Subdomain::TooLong(name.len()))
    } else if let Some(c) = name.chars().find(|c| !is_label_char(*c) && *c != '.') {
        Some(Subdomain::BadChar(c))
    } else if name
        .split('.')
        .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        Some(Subdomain::BadPart)
    } else {
        None
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trafficshift_name_must_leave_room_for_its_services_names() {
        let longest = format!("w{}", "e".repeat(MAX_SHIFT_NAME_LEN - 1));
        for ok in ["web", "w", "web-2", longest.as_str()] {
            assert_eq!(check_shift_name(ok), Ok(()), "{ok}");
        }
        let too_long = format!("{longest}b");
        for (bad, why) in [
            (too_long.as_str(), "is 58 characters long, more than 57"),
            ("1web", "does not start with a lower-case letter"),
            ("web.v2", "has '.', which is not"),
            ("Web", "has 'W', which is not"),
            ("wéb", "has 'é', which is not"),
            ("web-", "ends with '-'"),
            ("", "is empty"),
        ] {
            let err = check_shift_name(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
            assert!(
                err.contains("after it, which must be DNS-1035 labels"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_deployment_name_is_a_dns_1123_subdomain() {
        let longest = "a".repeat(MAX_OBJECT_NAME_LEN);
        for ok in ["web", "1web", "web.v2", "a-b.c-d", longest.as_str()] {
            assert_eq!(check_object_name(ok), Ok(()), "{ok}");
        }
        let too_long = format!("{longest}a");
        for (bad, why) in [
            (too_long.as_str(), "is 254 characters long, more than 253"),
            ("Web", "has 'W'"),
            ("web_v2", "has '_'"),
            ("web..v2", "empty or starts or ends with '-'"),
            ("-web", "empty or starts or ends with '-'"),
            ("web.-v2", "empty or starts or ends with '-'"),
            ("", "is empty"),
        ] {
            let err = check_object_name(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    /// The API server checks the same bounds at creation, from the CRD's schema.
    #[test]
    fn the_crd_schema_bounds_the_names_as_the_checks_do() {
        let crd = serde_json::to_value(super::super::crd()).expect("crd");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        let name = &schema["metadata"]["properties"]["name"];
        assert_eq!(name["maxLength"], MAX_SHIFT_NAME_LEN);
        assert_eq!(name["pattern"], SHIFT_NAME_PATTERN);
        let deployment = &schema["spec"]["properties"]["deployment"];
        assert_eq!(deployment["maxLength"], MAX_OBJECT_NAME_LEN);
        assert_eq!(deployment["pattern"], OBJECT_NAME_PATTERN);
    }
}
