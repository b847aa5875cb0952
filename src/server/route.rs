//! The route table, compiled once from config: `/svc/{service}/{path}` -> service, route and
//! action. Matching is linear in a service's own routes and allocates nothing.
//!
//! Patterns are literal segments and `*`: a `*` segment matches exactly one segment, except as
//! the last segment, where it matches one or more. The first matching route in config order wins.

use std::collections::HashMap;
use std::sync::Arc;

use crate::billing::{PriceVersionId, RoutePrice};
use crate::config::{Config, RouteConfig, ServiceConfig};

/// Every service's routes, by service name.
#[derive(Debug)]
pub struct RouteTable {
    services: HashMap<String, Arc<Service>>,
}

/// A service as the pipeline needs it.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub config: ServiceConfig,
    routes: Vec<Arc<Route>>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub service: String,
    pub method: Option<http::Method>,
    pub pattern: String,
    pub action: String,
    pub max_body: Option<u64>,
    /// What one call costs, as billing computes it.
    pub price: RoutePrice,
    /// The price book version `price` belongs to, recorded with each call (held here so the
    /// hot path never reads the price book). `None` only for a table compiled without a store.
    pub price_version: Option<PriceVersionId>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
}

/// Why a service call found no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no service named `{service}`")]
    NoSuchService { service: String },
    #[error("service `{service}` has no route for {method} `{path}`")]
    NoSuchRoute {
        service: String,
        method: String,
        path: String,
    },
}

/// The result of routing one call.
#[derive(Debug, Clone)]
pub struct Matched {
    pub service: Arc<Service>,
    pub route: Arc<Route>,
}

// === impl RouteTable ===

impl RouteTable {
    /// Compiles every route, with no price book version (tests, tools that do not meter).
    pub fn compile(config: &Config) -> Result<Self, String> {
        Self::compile_priced(config, None)
    }

    /// Compiles every route; each call routed by it is metered under `price_version`, the
    /// price book version recorded for this config (`crate::pricebook::record`).
    pub fn compile_priced(
        config: &Config,
        price_version: Option<PriceVersionId>,
    ) -> Result<Self, String> {
        let mut services = HashMap::new();
        for s in &config.services {
            let routes = s
                .routes
                .iter()
                .map(|r| {
                    Route::compile(&s.name, r, s.case_insensitive_paths, price_version)
                        .map(Arc::new)
                })
                .collect::<Result<Vec<_>, String>>()?;
            let service = Service {
                name: s.name.clone(),
                config: s.clone(),
                routes,
            };
            services.insert(s.name.clone(), Arc::new(service));
        }
        Ok(Self { services })
    }

    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// Routes `method` + `path` (the part after `/svc/{service}`, starting with `/`).
    pub fn route(
        &self,
        service: &str,
        method: &http::Method,
        path: &str,
    ) -> Result<Matched, RouteError> {
        let svc = self
            .services
            .get(service)
            .ok_or_else(|| RouteError::NoSuchService {
                service: service.to_owned(),
            })?;
        svc.routes
            .iter()
            .find(|r| r.matches(method, path))
            .map(|route| Matched {
                service: svc.clone(),
                route: route.clone(),
            })
            .ok_or_else(|| RouteError::NoSuchRoute {
                service: service.to_owned(),
                method: method.to_string(),
                path: path.chars().take(200).collect(),
            })
    }
}

// === impl Route ===

impl Route {
    /// `fold_case`: the service routes case-insensitively, so literals are kept folded and
    /// matched against the folded request path (`path::fold_case`).
    fn compile(
        service: &str,
        r: &RouteConfig,
        fold_case: bool,
        price_version: Option<PriceVersionId>,
    ) -> Result<Self, String> {
        let segments = r
            .path
            .split('/')
            .skip(1)
            .map(|s| match s {
                "*" => Segment::Any,
                s if fold_case => Segment::Literal(crate::server::path::fold_case(s).into_owned()),
                s => Segment::Literal(s.to_owned()),
            })
            .collect();
        Ok(Self {
            service: service.to_owned(),
            method: r.method.clone(),
            pattern: r.path.clone(),
            action: r.action.clone(),
            max_body: r.max_body,
            price: r.price.clone(),
            price_version,
            segments,
        })
    }

    fn matches(&self, method: &http::Method, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        let last = self.segments.len().saturating_sub(1);
        for (i, segment) in self.segments.iter().enumerate() {
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Literal(lit) if lit != part => return false,
                Segment::Any if part.is_empty() => return false,
                Segment::Any if i == last => return true,
                _ => {}
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let config = Config::parse(
            r#"
[[services]]
name = "storage"
upstream = "http://127.0.0.1:1"
  [[services.routes]]
  method = "GET"
  path = "/objects"
  action = "storage:ListObjects"
  [[services.routes]]
  method = "GET"
  path = "/objects/*"
  action = "storage:GetObject"
  [[services.routes]]
  path = "/buckets/*/meta"
  action = "storage:Meta"
"#,
        )
        .unwrap_or_else(|p| panic!("{p:?}"));
        RouteTable::compile(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn action(t: &RouteTable, method: &str, path: &str) -> Option<String> {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap_or_default();
        t.route("storage", &method, path)
            .ok()
            .map(|m| m.route.action.clone())
    }

    #[test]
    fn case_insensitive_services_match_folded_paths_against_folded_patterns() {
        let mut config = Config::parse(
            r#"
[[services]]
name = "storage"
upstream = "http://127.0.0.1:1"
case_insensitive_paths = true
  [[services.routes]]
  method = "GET"
  path = "/Objects/*"
  action = "storage:GetObject"
"#,
        )
        .unwrap_or_else(|p| panic!("{p:?}"));
        let t = RouteTable::compile(&config).unwrap_or_else(|e| panic!("{e}"));
        // The pipeline folds the request path (`path::fold_case`) before routing.
        assert_eq!(
            action(&t, "GET", "/objects/a").as_deref(),
            Some("storage:GetObject")
        );
        for service in &mut config.services {
            service.case_insensitive_paths = false;
        }
        let t = RouteTable::compile(&config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(action(&t, "GET", "/objects/a"), None, "case-sensitive");
    }

    #[test]
    fn literal_and_wildcards() {
        let t = table();
        assert_eq!(
            action(&t, "GET", "/objects").as_deref(),
            Some("storage:ListObjects")
        );
        assert_eq!(
            action(&t, "GET", "/objects/a").as_deref(),
            Some("storage:GetObject")
        );
        assert_eq!(
            action(&t, "GET", "/objects/a/b/c").as_deref(),
            Some("storage:GetObject")
        );
        assert_eq!(
            action(&t, "GET", "/objects/"),
            None,
            "a trailing `*` needs a segment"
        );
        assert_eq!(action(&t, "PUT", "/objects/a"), None, "method must match");
        assert_eq!(
            action(&t, "DELETE", "/buckets/b1/meta").as_deref(),
            Some("storage:Meta")
        );
        assert_eq!(
            action(&t, "GET", "/buckets/b1/x/meta"),
            None,
            "inner `*` is one segment"
        );
        assert_eq!(action(&t, "GET", "/objectsx"), None);
    }

    #[test]
    fn unknown_service_and_route_are_distinct_errors() {
        let t = table();
        assert!(matches!(
            t.route("nope", &http::Method::GET, "/x"),
            Err(RouteError::NoSuchService { .. })
        ));
        assert!(matches!(
            t.route("storage", &http::Method::GET, "/x"),
            Err(RouteError::NoSuchRoute { .. })
        ));
    }
}

/// Property tests: routing any path of the shipped services never panics, and agrees with a
/// plain reference reading of the patterns (`*` is one non-empty segment, or, last, the rest).
/// `PROPTEST_CASES` raises the case count (docs/hardening.md).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1024),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn reference(pattern: &str, path: &str) -> bool {
        let pattern: Vec<&str> = pattern.split('/').skip(1).collect();
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        for (i, segment) in pattern.iter().enumerate() {
            let Some(part) = parts.get(i) else {
                return false;
            };
            let last = i + 1 == pattern.len();
            match *segment {
                "*" if part.is_empty() => return false,
                "*" if last => return true,
                "*" => {}
                literal if literal != *part => return false,
                _ => {}
            }
        }
        parts.len() == pattern.len()
    }

    fn path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("objects".to_owned()),
            Just("tickets".to_owned()),
            Just("instances".to_owned()),
            Just("*".to_owned()),
            "[a-z0-9.%-]{1,6}",
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn routing_agrees_with_the_reference(
            path in path(),
            method in prop_oneof![Just("GET"), Just("PUT"), Just("POST"), Just("DELETE"), Just("PATCH")],
        ) {
            let config = Config::embedded_default().unwrap_or_else(|p| panic!("{p:?}"));
            let table = RouteTable::compile(&config).unwrap_or_else(|e| panic!("{e}"));
            let method = http::Method::from_bytes(method.as_bytes()).unwrap_or_default();
            for service in &config.services {
                let expected = service.routes.iter().find(|r| {
                    r.method.as_ref().is_none_or(|m| *m == method) && reference(&r.path, &path)
                });
                let got = table.route(&service.name, &method, &path);
                match (expected, got) {
                    (Some(r), Ok(m)) => prop_assert_eq!(&r.action, &m.route.action),
                    (None, Err(RouteError::NoSuchRoute { .. })) => {}
                    (e, g) => prop_assert!(false, "{} {} {}: expected {:?}, got {:?}",
                        service.name, method, path, e.map(|r| &r.action), g.map(|m| m.route.action.clone())),
                }
            }
        }
    }
}
