//! Kinds built on another kind: an optional value, a list, a table.

use super::*;

/// An option that may be left unset: absent from the file means `None`.
#[derive(Debug)]
pub(crate) struct OptionalKind<K>(pub(crate) K);

impl<K: Kind> Kind for OptionalKind<K> {
    type Value = Option<K::Value>;

    fn type_doc(&self) -> String {
        self.0.type_doc()
    }

    fn choices(&self) -> Vec<(String, String)> {
        self.0.choices()
    }

    fn value_name(&self) -> &'static str {
        self.0.value_name()
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        self.0.read_toml(value).map(Some)
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        self.0.read_flag(arguments).map(Some)
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        value.as_ref().map_or(Ok(()), |inner| self.0.check(inner))
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        value.as_ref().and_then(|inner| self.0.to_toml(inner))
    }
}

/// A list of values; on the command line, one flag per element.
#[derive(Debug)]
pub(crate) struct ListKind<K> {
    element: K,
    length_max: usize,
}

impl<K> ListKind<K> {
    pub(crate) const fn new(element: K, length_max: usize) -> Self {
        ListKind {
            element,
            length_max,
        }
    }
}

impl<K: Kind> Kind for ListKind<K> {
    type Value = Vec<K::Value>;

    fn type_doc(&self) -> String {
        format!(
            "array of at most {} elements, each: {}",
            self.length_max,
            self.element.type_doc()
        )
    }

    fn value_name(&self) -> &'static str {
        self.element.value_name()
    }

    fn repeat_unit(&self) -> Option<&'static str> {
        Some("element")
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        let DeValue::Array(array) = value.get_ref() else {
            return Err(SpannedError::at(
                value,
                format!(
                    "expected an array, found {}",
                    type_with_article(value.get_ref())
                ),
            ));
        };
        if array.len() > self.length_max {
            return Err(SpannedError::at(
                value,
                format!(
                    "{} elements is above the maximum {}",
                    array.len(),
                    self.length_max
                ),
            ));
        }
        array
            .iter()
            .map(|element| self.element.read_toml(element))
            .collect()
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        if arguments.len() > self.length_max {
            return Err(format!(
                "given {} times; the maximum is {}",
                arguments.len(),
                self.length_max
            ));
        }
        arguments
            .iter()
            .map(|argument| self.element.read_flag(std::slice::from_ref(argument)))
            .collect()
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        if value.len() > self.length_max {
            return Err(format!(
                "{} elements is above the maximum {}",
                value.len(),
                self.length_max
            ));
        }
        value
            .iter()
            .try_for_each(|element| self.element.check(element))
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        let elements: Vec<String> = value
            .iter()
            .filter_map(|element| self.element.to_toml(element))
            .collect();
        Some(format!("[{}]", elements.join(", ")))
    }
}

/// A table from keys of type `Key` (parsed by its `FromStr`) to values of a
/// kind; on the command line, one `KEY=VALUE` flag per entry.
#[derive(Debug)]
pub(crate) struct MapKind<Key, V> {
    key_doc: &'static str,
    value: V,
    length_max: usize,
    value_name: &'static str,
    key_type: PhantomData<fn() -> Key>,
}

impl<Key, V> MapKind<Key, V> {
    pub(crate) const fn new(
        key_doc: &'static str,
        value: V,
        length_max: usize,
        value_name: &'static str,
    ) -> Self {
        MapKind {
            key_doc,
            value,
            length_max,
            value_name,
            key_type: PhantomData,
        }
    }
}

impl<Key, V> Kind for MapKind<Key, V>
where
    Key: FromStr<Err = ValueError> + Ord + Clone + fmt::Debug + fmt::Display,
    V: Kind,
{
    type Value = BTreeMap<Key, V::Value>;

    fn type_doc(&self) -> String {
        format!(
            "table of at most {} entries; key: {}; value: {}",
            self.length_max,
            self.key_doc,
            self.value.type_doc()
        )
    }

    fn value_name(&self) -> &'static str {
        self.value_name
    }

    fn repeat_unit(&self) -> Option<&'static str> {
        Some("entry")
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(SpannedError::at(
                value,
                format!(
                    "expected a table, found {}",
                    type_with_article(value.get_ref())
                ),
            ));
        };
        if table.len() > self.length_max {
            return Err(SpannedError::at(
                value,
                format!(
                    "{} entries is above the maximum {}",
                    table.len(),
                    self.length_max
                ),
            ));
        }
        // In file order, so the first bad entry is the one reported.
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut map = BTreeMap::new();
        for (key, entry_value) in entries {
            let key_error = |message: String| SpannedError {
                span: key.span(),
                message,
            };
            let parsed_key: Key = key
                .get_ref()
                .parse()
                .map_err(|error: ValueError| key_error(error.message().to_owned()))?;
            let parsed_value = self.value.read_toml(entry_value)?;
            if map.insert(parsed_key.clone(), parsed_value).is_some() {
                return Err(key_error(format!(
                    "{parsed_key} appears twice (keys are compared without leading and trailing spaces)"
                )));
            }
        }
        Ok(map)
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        if arguments.len() > self.length_max {
            return Err(format!(
                "given {} times; the maximum is {}",
                arguments.len(),
                self.length_max
            ));
        }
        let mut map = BTreeMap::new();
        for argument in arguments {
            let (key, value) = argument
                .split_once('=')
                .ok_or_else(|| format!("{argument:?} is not KEY=VALUE"))?;
            let key: Key = key
                .parse()
                .map_err(|error: ValueError| error.message().to_owned())?;
            let value = self.value.read_flag(&[value.to_owned()])?;
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("{key} is given twice"));
            }
        }
        Ok(map)
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        if value.len() > self.length_max {
            return Err(format!(
                "{} entries is above the maximum {}",
                value.len(),
                self.length_max
            ));
        }
        value.values().try_for_each(|entry| self.value.check(entry))
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        if value.is_empty() {
            return Some("{}".to_owned());
        }
        let entries: Vec<String> = value
            .iter()
            .filter_map(|(key, entry)| {
                let entry = self.value.to_toml(entry)?;
                Some(format!("{} = {entry}", toml_key(&key.to_string())))
            })
            .collect();
        Some(format!("{{ {} }}", entries.join(", ")))
    }
}
