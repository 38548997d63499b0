FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CLIRELAY_DATA_DIR=/data
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN SECRET_KEY=build CLIRELAY_ENCRYPTION_KEY=$(python -c 'from cryptography.fernet import Fernet;print(Fernet.generate_key().decode())') \
    API_KEY_PEPPER=build python manage.py collectstatic --noinput -v 0
EXPOSE 8317
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py bootstrap && exec python manage.py serve --host 0.0.0.0 --port 8317"]
