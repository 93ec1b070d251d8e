def load_settings():
    raise ValueError("DATABASE_URL is not configured (top-level failure marker 7f3a)")
