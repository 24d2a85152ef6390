//! Port sets as routes write them: single ports, lists and ranges like `"8000-8999"`.

use serde::Deserialize;

/// One item of a `ports` value as written in TOML: `80` or `"8000-8999"` or `"443"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum PortItem {
    Number(i64),
    Text(String),
}

/// A `ports` value: one item or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum PortsValue {
    One(PortItem),
    Many(Vec<PortItem>),
}

/// A validated, non-empty set of TCP/UDP ports, kept as sorted, merged inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    /// Parses a `ports` value; every bad item is reported as its own message.
    pub(crate) fn parse(value: &PortsValue) -> Result<PortSet, Vec<String>> {
        let items: Vec<&PortItem> = match value {
            PortsValue::One(item) => vec![item],
            PortsValue::Many(items) => items.iter().collect(),
        };
        let mut errors = Vec::new();
        let mut ranges = Vec::new();
        if items.is_empty() {
            errors.push("is empty: give at least one port".to_string());
        }
        for item in items {
            match parse_item(item) {
                Ok(range) => ranges.push(range),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(PortSet::from_ranges(ranges))
    }

    /// Builds a set from inclusive ranges (which may overlap).
    pub fn from_ranges(mut ranges: Vec<(u16, u16)>) -> PortSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        PortSet { ranges: merged }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }

    /// Every port in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|&(lo, hi)| lo..=hi)
    }

    /// How many ports the set holds.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|&(lo, hi)| usize::from(hi - lo) + 1).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether the two sets share at least one port.
    pub fn overlaps(&self, other: &PortSet) -> bool {
        self.ranges
            .iter()
            .any(|&(a, b)| other.ranges.iter().any(|&(c, d)| a <= d && c <= b))
    }
}

fn parse_item(item: &PortItem) -> Result<(u16, u16), String> {
    match item {
        PortItem::Number(n) => port_number(*n).map(|p| (p, p)),
        PortItem::Text(text) => {
            let text = text.trim();
            if let Some((lo, hi)) = text.split_once('-') {
                let lo = parse_port_text(lo)?;
                let hi = parse_port_text(hi)?;
                if lo > hi {
                    return Err(format!("range {lo}-{hi} is reversed"));
                }
                Ok((lo, hi))
            } else {
                parse_port_text(text).map(|p| (p, p))
            }
        }
    }
}

fn parse_port_text(text: &str) -> Result<u16, String> {
    let text = text.trim();
    match text.parse::<i64>() {
        Ok(n) => port_number(n),
        Err(_) => Err(format!("`{text}` is not a port number or a range like \"8000-8999\"")),
    }
}

fn port_number(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("port {n} is outside 1-65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_value: &str) -> Result<PortSet, Vec<String>> {
        #[derive(Deserialize)]
        struct Holder {
            ports: PortsValue,
        }
        let holder: Holder = toml::from_str(&format!("ports = {toml_value}")).expect("toml");
        PortSet::parse(&holder.ports)
    }

    #[test]
    fn single_list_and_ranges_merge() {
        let set = parse(r#"[80, "443", "8000-8002", "8001-8005", 8006]"#).expect("valid");
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![80, 443, 8000, 8001, 8002, 8003, 8004, 8005, 8006]);
        assert_eq!(set.len(), 9);
        assert!(set.contains(8004) && !set.contains(8007));
        assert_eq!(parse("22").expect("one").iter().collect::<Vec<_>>(), vec![22]);
    }

    #[test]
    fn every_bad_item_is_reported() {
        let errors = parse(r#"[0, "9000-8000", 70000, "http"]"#).expect_err("invalid");
        assert_eq!(
            errors,
            vec![
                "port 0 is outside 1-65535".to_string(),
                "range 9000-8000 is reversed".to_string(),
                "port 70000 is outside 1-65535".to_string(),
                "`http` is not a port number or a range like \"8000-8999\"".to_string(),
            ]
        );
        assert_eq!(parse("[]").expect_err("empty"), vec!["is empty: give at least one port".to_string()]);
    }

    #[test]
    fn overlap() {
        let a = PortSet::from_ranges(vec![(80, 90)]);
        let b = PortSet::from_ranges(vec![(90, 100)]);
        let c = PortSet::from_ranges(vec![(91, 100)]);
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
    }
}
