"""Reports: terminal tables, result files, plots and the HTML page."""
