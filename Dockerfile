# Production image: point MONGODB_URI at a replica set and REDIS_URL at Redis,
# or leave both unset to run the embedded store on /data.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -e '.[embedded]'
ENV FHIRSERVER_HOST=0.0.0.0 FHIRSERVER_PORT=8080 FHIRSERVER_DATA_DIR=/data FHIRSERVER_HOME=/app
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK CMD python -c "import urllib.request;urllib.request.urlopen('http://127.0.0.1:8080/fhir/health')"
ENTRYPOINT ["fhirserver", "serve"]
