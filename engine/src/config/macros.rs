//! The `config_options!` macro: turns the one declaration of every option
//! (in `options.rs`) into the resolved `Config` structs, the per-source
//! `Layer` of raw settings, the origin record, the per-option checks and the
//! metadata the CLI flags and the generated reference are built from.
//!
//! Shape of a declaration (doc comments are the option's documentation):
//!
//! ```text
//! /// Section documentation.
//! [section] SectionStruct "Title" {
//!     /// Option documentation.
//!     name: RustType = default_expr, kind KIND_EXPR, flag "flag-name" [, example "toml"];
//! }
//! ```
//!
//! Option names must be unique across sections (the `Layer` is flat: the
//! compiler rejects a duplicate).

macro_rules! config_options {
    (
        $(
            $(#[doc = $section_doc:literal])*
            [$section:ident] $Section:ident $title:literal {
                $(
                    $(#[doc = $doc:literal])*
                    $name:ident : $ty:ty = $default:expr,
                        kind $kind:expr, flag $flag:literal $(, example $example:literal)? ;
                )*
            }
        )*
    ) => {
        /// The resolved, validated server configuration: built-in defaults,
        /// overridden by the configuration file, overridden by flags.
        ///
        /// `Config::default()` is the embedded default `sluice serve` runs
        /// with when given no arguments. Every field is documented in
        /// `docs/configuration.md`, generated from the same declaration.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub struct Config {
            $(
                $(#[doc = $section_doc])*
                pub $section: $Section,
            )*
        }

        $(
            $(#[doc = $section_doc])*
            #[derive(Clone, Debug, PartialEq)]
            #[non_exhaustive]
            pub struct $Section {
                $(
                    $(#[doc = $doc])*
                    pub $name: $ty,
                )*
            }
        )*

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $( $section: $Section { $( $name: $default, )* }, )*
                }
            }
        }

        /// The settings one source (the file, or the flags) gives: each
        /// option already read and range-checked, with where it came from.
        #[derive(Debug, Default)]
        pub(crate) struct Layer {
            $( $( pub(crate) $name: Option<(Origin, $ty)>, )* )*
        }

        /// Where each option of a resolved `Config` came from, so that a
        /// check across options can name the line or flag to fix.
        #[derive(Clone, Debug)]
        pub(crate) struct Origins {
            $( $( pub(crate) $name: Origin, )* )*
        }

        impl Default for Origins {
            fn default() -> Self {
                Origins { $( $( $name: Origin::Default, )* )* }
            }
        }

        impl Layer {
            /// Reads `[section] key = value` from the file; `None` if no
            /// option has that name, else the option's key with any error.
            pub(crate) fn set_from_toml(
                &mut self,
                section: &str,
                key: &str,
                value: &TomlValue<'_>,
                origin: Origin,
            ) -> Option<Result<(), (&'static str, SpannedError)>> {
                $( $(
                    if section == stringify!($section) && key == stringify!($name) {
                        return Some(match Kind::read_toml(&$kind, value) {
                            Ok(parsed) => {
                                self.$name = Some((origin, parsed));
                                Ok(())
                            }
                            Err(error) => Err((
                                concat!(stringify!($section), ".", stringify!($name)),
                                error,
                            )),
                        });
                    }
                )* )*
                None
            }

            /// Reads the flags that were given, keyed by option key.
            pub(crate) fn set_from_flags(
                &mut self,
                flags: &BTreeMap<&'static str, Vec<String>>,
            ) -> Result<(), ConfigError> {
                $( $(
                    if let Some(arguments) = flags.get(concat!(stringify!($section), ".", stringify!($name))) {
                        let origin = Origin::Flag { flag: $flag };
                        let value = Kind::read_flag(&$kind, arguments).map_err(|message| {
                            ConfigError::Invalid {
                                origin: origin.clone(),
                                option: concat!(stringify!($section), ".", stringify!($name)),
                                message,
                            }
                        })?;
                        self.$name = Some((origin, value));
                    }
                )* )*
                Ok(())
            }

            /// Overrides `config` with every option this layer sets.
            pub(crate) fn apply(self, config: &mut Config, origins: &mut Origins) {
                $( $(
                    if let Some((origin, value)) = self.$name {
                        config.$section.$name = value;
                        origins.$name = origin;
                    }
                )* )*
            }
        }

        /// Checks every option's value against its kind (ranges, lengths).
        pub(crate) fn check_each(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
            $( $(
                Kind::check(&$kind, &config.$section.$name).map_err(|message| {
                    ConfigError::Invalid {
                        origin: origins.$name.clone(),
                        option: concat!(stringify!($section), ".", stringify!($name)),
                        message,
                    }
                })?;
            )* )*
            Ok(())
        }

        /// Every section, in declaration order.
        pub(crate) const SECTIONS: &[SectionInfo] = &[
            $(
                SectionInfo {
                    name: stringify!($section),
                    title: $title,
                    doc: concat!($($section_doc, "\n",)* ""),
                },
            )*
        ];

        /// Every option's metadata, in declaration order.
        pub(crate) fn option_infos() -> Vec<OptionInfo> {
            let defaults = Config::default();
            vec![
                $( $(
                    OptionInfo {
                        section: stringify!($section),
                        name: stringify!($name),
                        key: concat!(stringify!($section), ".", stringify!($name)),
                        flag: $flag,
                        doc: concat!($($doc, "\n",)* ""),
                        type_doc: Kind::type_doc(&$kind),
                        choices: Kind::choices(&$kind),
                        value_name: Kind::value_name(&$kind),
                        repeat_unit: Kind::repeat_unit(&$kind),
                        default_toml: Kind::to_toml(&$kind, &defaults.$section.$name),
                        example_toml: None $( .or(Some($example)) )?,
                    },
                )* )*
            ]
        }
    };
}
