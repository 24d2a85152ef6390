//! `[[email.templates]]`: messages `shardgate send --template NAME` composes.
//!
//! Owns: the template entries (`name`, `subject`, `text` and/or `html`, with `{{var}}`
//! placeholders), their checks (unique names, a body, placeholders that close, variable
//! names of letters, digits, `_`, `-` and `.`), and taking the `templates` key out of the
//! `[email]` table before the rest of it is checked (`super::email`).
//! Does not own: filling placeholders and building the MIME message (`crate::mail::template`).

use serde::Deserialize;

use super::problems::ProblemList;

/// One checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailTemplate {
    /// Unique name (`--template NAME`).
    pub name: String,
    /// Subject line, with placeholders.
    pub subject: String,
    /// Plain text body, with placeholders.
    pub text: Option<String>,
    /// HTML body, with placeholders (values are HTML-escaped when filled).
    pub html: Option<String>,
}

impl MailTemplate {
    /// Every placeholder name used, in order of first use.
    pub fn variables(&self) -> Vec<String> {
        let mut names = Vec::new();
        for part in [Some(&self.subject), self.text.as_ref(), self.html.as_ref()].into_iter().flatten() {
            for name in placeholders(part).into_iter().flatten() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    name: Option<String>,
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
}

/// The placeholder names in `text`, or the first malformed placeholder.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("`{{{{` without a closing `}}}}` near `{}`", after.chars().take(20).collect::<String>()));
        };
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Err(format!("`{{{{{}}}}}` is not a variable name (letters, digits, _ - .)", &after[..end]));
        }
        names.push(name.to_string());
        rest = &after[end + 2..];
    }
    Ok(names)
}

/// Removes `templates` from a copy of the `[email]` table; returns the rest and the
/// templates value, if any.
pub(super) fn split_templates(email: &toml::Value) -> (toml::Value, Option<toml::Value>) {
    let mut rest = email.clone();
    let templates = rest.as_table_mut().and_then(|table| table.remove("templates"));
    (rest, templates)
}

/// Checks `[[email.templates]]` (every problem is reported).
pub(super) fn validate_templates(problems: &mut ProblemList, value: toml::Value) -> Vec<MailTemplate> {
    let Some(list) = value.as_array() else {
        problems.section("email", "templates", "must be a list: write each as [[email.templates]]");
        return Vec::new();
    };
    let mut templates: Vec<MailTemplate> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (position, entry) in list.iter().enumerate() {
        let raw: RawTemplate = match entry.clone().try_into() {
            Ok(raw) => raw,
            Err(e) => {
                problems.section(&format!("email.templates #{}", position + 1), "", e.to_string().trim().to_string());
                continue;
            }
        };
        let name = raw.name.clone().unwrap_or_default();
        let scope = if name.is_empty() { format!("email.templates #{}", position + 1) } else { format!("email.templates `{name}`") };
        let before = problems.len();
        if name.is_empty() {
            problems.section(&scope, "name", "missing: `shardgate send --template NAME` needs it");
        } else if names.contains(&name) {
            problems.section(&scope, "name", "another template has this name");
        } else {
            names.push(name.clone());
        }
        let subject = raw.subject.unwrap_or_default();
        if subject.is_empty() {
            problems.section(&scope, "subject", "missing");
        } else if subject.contains(['\r', '\n']) {
            problems.section(&scope, "subject", "must be one line");
        }
        if raw.text.is_none() && raw.html.is_none() {
            problems.section(&scope, "text", "a template needs `text`, `html` or both");
        }
        for (field, part) in [("subject", Some(&subject)), ("text", raw.text.as_ref()), ("html", raw.html.as_ref())] {
            if let Some(Err(why)) = part.map(|p| placeholders(p)) {
                problems.section(&scope, field, why);
            }
        }
        if problems.len() == before {
            templates.push(MailTemplate { name, subject, text: raw.text, html: raw.html });
        }
    }
    templates
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const EMAIL: &str = "[email]\nhostname = \"mx.example.com\"\n[email.ports]\nsmtp = 2525\n";

    #[test]
    fn templates_are_typed_and_their_variables_listed() {
        let config = Config::parse(
            &format!(
                "{EMAIL}[[email.templates]]\nname = \"welcome\"\nsubject = \"Hello {{{{name}}}}\"\ntext = \"Hi {{{{ name }}}}, your code is {{{{code}}}}.\"\nhtml = \"<p>{{{{name}}}}</p>\"\n"
            ),
            "edge.toml",
        )
        .expect("valid");
        assert_eq!(config.mail_templates.len(), 1);
        assert_eq!(config.mail_templates[0].variables(), ["name", "code"]);
        assert!(config.email.is_some());
    }

    #[test]
    fn every_template_problem_is_named() {
        let text = format!(
            "{EMAIL}[[email.templates]]\nname = \"a\"\nsubject = \"x {{{{oops\"\n[[email.templates]]\nname = \"a\"\nsubject = \"s\"\n[[email.templates]]\nsubject = \"s\"\ntext = \"{{{{bad name}}}}\"\nbogus = 1\n"
        );
        let found: Vec<String> = match Config::parse(&text, "edge.toml") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.problems.iter().map(|p| p.to_string()).collect(),
        };
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(has("[email.templates `a`] subject: `{{` without a closing"), "{found:#?}");
        assert!(has("[email.templates `a`] name: another template"), "{found:#?}");
        assert!(has("[email.templates `a`] text: a template needs"), "{found:#?}");
        assert!(has("[email.templates #3]"), "{found:#?}");
    }
}
