//! The timeline page (`infra/local/ui/`: plain HTML, CSS and one JavaScript module, no build
//! step), compiled into the runner and served at `/ui/`. The files hold no data and need no
//! token; the page calls the public API with the caller's token, as any client does.

/// The file at `path` (content type and body), if it is one of the page's.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/ui/" | "/ui/index.html" => {
            Some(("text/html; charset=utf-8", include_str!("../ui/index.html")))
        }
        "/ui/app.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("../ui/app.js"),
        )),
        "/ui/style.css" => Some(("text/css; charset=utf-8", include_str!("../ui/style.css"))),
        _ => None,
    }
}

/// The page's address on the runner, carrying `token` in the fragment (which browsers never
/// send to a server).
pub fn url(base: &str, token: &str) -> String {
    format!("{base}/ui/#token={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        let (kind, html) = asset("/ui/").unwrap();
        assert!(kind.starts_with("text/html"));
        for file in ["style.css", "app.js"] {
            assert!(html.contains(&format!("\"{file}\"")), "{file}");
            assert!(asset(&format!("/ui/{file}")).is_some());
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert_eq!(asset("/ui/../Cargo.toml"), None);
        assert_eq!(asset("/ui/secret"), None);
    }
}
