"""HTTP plumbing shared by the JSON API and the HTML pages (reading bounded uploads, cache headers)."""
