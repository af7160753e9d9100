"""Status: persisted app state, metrics, logging and the HTTP API."""
