"""Request and response models shared by the JSON API and the HTML pages: a field is named and validated once."""
