"""Result index (Parquet) and sweep reports (PNG plots + Markdown/HTML summary)."""
