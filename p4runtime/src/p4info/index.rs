//! [`Index`]: a list of named P4Info objects with lookups by name and id.

use std::collections::HashMap;

use crate::{Error, Kind, Result};

/// What an [`Index`] needs to know about the objects it holds.
pub trait Named {
    /// The P4Runtime id.
    fn id(&self) -> u32;
    /// The fully qualified name.
    fn name(&self) -> &str;
    /// The shortest unique suffix of the name, for objects that have one.
    fn alias(&self) -> Option<&str> {
        None
    }
}

/// Objects of one [`Kind`], in P4Info order, with lookups by full name,
/// alias and id.
#[derive(Debug, Clone)]
pub struct Index<T> {
    kind: Kind,
    /// Where the objects live, for error messages: "P4Info" or e.g.
    /// "table `Ingress.route`".
    scope: String,
    items: Vec<T>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<u32, usize>,
}

impl<T: Named> Index<T> {
    /// Indexes `items`, failing on duplicate full names or ids.
    ///
    /// An alias is indexed only if it is unambiguous, i.e. no other object
    /// has it as its name or alias: p4c never emits such aliases, and a
    /// lookup must never pick one of two objects silently.
    pub(crate) fn new(kind: Kind, scope: impl Into<String>, items: Vec<T>) -> Result<Self> {
        let mut by_name = HashMap::with_capacity(items.len() * 2);
        let mut by_id = HashMap::with_capacity(items.len());
        for (position, item) in items.iter().enumerate() {
            if by_name.insert(item.name().to_owned(), position).is_some() {
                let name = item.name().to_owned();
                return Err(Error::DuplicateName { kind, name });
            }
            if by_id.insert(item.id(), position).is_some() {
                return Err(Error::DuplicateId {
                    kind,
                    id: item.id(),
                });
            }
        }

        let mut alias_uses: HashMap<&str, usize> = HashMap::new();
        for alias in items.iter().filter_map(Named::alias) {
            *alias_uses.entry(alias).or_default() += 1;
        }
        for (position, item) in items.iter().enumerate() {
            if let Some(alias) = item.alias() {
                if alias_uses[alias] == 1 && !by_name.contains_key(alias) {
                    by_name.insert(alias.to_owned(), position);
                }
            }
        }

        Ok(Index {
            kind,
            scope: scope.into(),
            items,
            by_name,
            by_id,
        })
    }

    /// The object with this full name or alias.
    pub fn get(&self, name: &str) -> Result<&T> {
        match self.by_name.get(name) {
            Some(&position) => Ok(&self.items[position]),
            None => Err(self.unknown_name(name)),
        }
    }

    /// The id of the object with this full name or alias.
    pub fn id(&self, name: &str) -> Result<u32> {
        self.get(name).map(Named::id)
    }

    /// The object with this id.
    pub fn by_id(&self, id: u32) -> Result<&T> {
        match self.by_id.get(&id) {
            Some(&position) => Ok(&self.items[position]),
            None => Err(Error::UnknownId {
                kind: self.kind,
                id,
                scope: self.scope.clone(),
            }),
        }
    }

    /// The full name of the object with this id.
    pub fn name(&self, id: u32) -> Result<&str> {
        self.by_id(id).map(Named::name)
    }

    /// All objects, in P4Info order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// What this index holds.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn unknown_name(&self, name: &str) -> Error {
        let mut known: Vec<String> = self.items.iter().map(|i| i.name().to_owned()).collect();
        known.sort();
        Error::UnknownName {
            kind: self.kind,
            name: name.to_owned(),
            scope: self.scope.clone(),
            known,
        }
    }
}

impl<'a, T> IntoIterator for &'a Index<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Object(u32, &'static str, &'static str);

    impl Named for Object {
        fn id(&self) -> u32 {
            self.0
        }
        fn name(&self) -> &str {
            self.1
        }
        fn alias(&self) -> Option<&str> {
            Some(self.2)
        }
    }

    fn index(objects: Vec<Object>) -> Result<Index<Object>> {
        Index::new(Kind::Table, "P4Info", objects)
    }

    #[test]
    fn ambiguous_aliases_resolve_to_nothing() {
        let tables = index(vec![Object(1, "In.t", "t"), Object(2, "Out.t", "t")]).unwrap();
        assert_eq!(tables.id("In.t").unwrap(), 1);
        assert_eq!(tables.id("Out.t").unwrap(), 2);
        assert!(tables.get("t").is_err());
    }

    #[test]
    fn full_names_win_over_aliases() {
        // Not something p4c emits, but a lookup must stay predictable.
        let tables = index(vec![Object(1, "t", "t"), Object(2, "In.x", "t")]).unwrap();
        assert_eq!(tables.id("t").unwrap(), 1);
    }

    #[test]
    fn duplicates_are_rejected() {
        let same_name = index(vec![Object(1, "t", "t"), Object(2, "t", "t")]);
        assert!(matches!(same_name, Err(Error::DuplicateName { .. })));
        let same_id = index(vec![Object(1, "a", "a"), Object(1, "b", "b")]);
        assert!(matches!(same_id, Err(Error::DuplicateId { id: 1, .. })));
    }

    #[test]
    fn long_known_lists_are_cut_short() {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
        let objects = (1..).zip(names).map(|(id, name)| Object(id, name, name));
        let error = index(objects.collect()).unwrap().get("z").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown table `z` in P4Info (known: a, b, c, d, e, f, g, h, i, j, … (2 more))"
        );
    }
}
