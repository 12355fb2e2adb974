//! Just enough XML for EC2 Query responses: the text of named elements.
//! EC2 answers are small, flat in the parts read here, without CDATA or
//! attributes that matter; anything malformed simply yields no value.

/// The text of every `<name>…</name>` element, in document order
/// (entities decoded). Elements with children yield their raw inner text.
pub fn all<'a>(xml: &'a str, name: &str) -> Vec<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest: &'a str = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else {
            break;
        };
        out.push(unescape(&after[..j]));
        rest = &after[j + close.len()..];
    }
    out
}

/// The text of the first `<name>` element.
pub fn first(xml: &str, name: &str) -> Option<String> {
    all(xml, name).into_iter().next()
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.trim().to_string();
    }
    s.trim()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// An EC2 error response: `<Response><Errors><Error><Code>…</Code>
/// <Message>…</Message></Error></Errors>…` (the first error).
pub fn error(xml: &str) -> Option<(String, String)> {
    let errors = first(xml, "Errors").or_else(|| first(xml, "Error"))?;
    let code = first(&errors, "Code")?;
    let message = first(&errors, "Message").unwrap_or_default();
    Some((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_and_entities() {
        let x = "<a><b> one </b><c>x</c><b>t&amp;w&lt;o</b></a>";
        assert_eq!(all(x, "b"), ["one", "t&w<o"]);
        assert_eq!(first(x, "c").as_deref(), Some("x"));
        assert_eq!(first(x, "d"), None);
        // Unterminated: nothing, no panic.
        assert_eq!(all("<b>open", "b"), Vec::<String>::new());
        assert_eq!(first("", "b"), None);
    }

    #[test]
    fn ec2_error_response() {
        let x = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able to validate the provided access credentials</Message></Error></Errors><RequestID>59dbff89-35bd-4eac-99ed-be587EXAMPLE</RequestID></Response>"#;
        assert_eq!(
            error(x),
            Some((
                "AuthFailure".into(),
                "AWS was not able to validate the provided access credentials".into()
            ))
        );
        // Some emulators answer with a bare <Error> document.
        let x = "<ErrorResponse><Error><Code>InvalidParameterValue</Code><Message>bad &quot;x&quot;</Message></Error></ErrorResponse>";
        assert_eq!(
            error(x),
            Some(("InvalidParameterValue".into(), "bad \"x\"".into()))
        );
        assert_eq!(error("<AssociateAddressResponse/>"), None);
    }
}
