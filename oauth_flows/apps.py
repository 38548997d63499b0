from django.apps import AppConfig


class OauthFlowsConfig(AppConfig):
    name = "oauth_flows"
    verbose_name = "OAuth logins"
