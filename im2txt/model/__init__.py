"""The Show and Tell model: InceptionV3 encoder, LSTM decoder, preprocessing, TF-slim weights."""
