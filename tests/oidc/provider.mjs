// A certified OpenID provider (panva's oidc-provider, from npm) for crew-mcp's opt-in `oidc` tests.
//
// Configured the way a team would configure an identity provider for an MCP server: dynamic client registration,
// authorization code + PKCE (S256), RFC 8707 resource indicators issuing JWT access tokens (RS256) whose `aud` is the
// resource, the crew scopes, and a `groups` claim. Logins and consent are automatic for the user the test names with
// `POST /_test/user/<name>` (groups from `?groups=a,b`). Listens on 127.0.0.1, port 0, and prints `ISSUER <url>`.
//
// Run from the folder where oidc-provider is installed (tests/test_oidc.py copies this file there).

import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const SCOPES = ['crew:read', 'crew:run', 'crew:approve'];
let user = 'alice';
let groups = [];

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'oidc-test-rs256', alg: 'RS256', use: 'sig' };

const server = http.createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [signing] },
  scopes: ['openid', 'offline_access', ...SCOPES],
  cookies: { keys: ['crew-mcp-oidc-test-cookie-key'] },
  pkce: { required: () => true },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  extraTokenClaims: async () => ({ groups }),
  interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => ({
        scope: SCOPES.join(' '),
        audience: resourceIndicator,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  const missing = details.prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

for (const event of ['grant.error', 'authorization.error', 'registration_create.error', 'server_error']) {
  provider.on(event, (ctx, err) => { console.error(`${event}: ${err.message} ${err.error_detail || ''}`); });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  const who = url.pathname.match(/^\/_test\/user\/([^/]+)$/);
  if (who && req.method === 'POST') {
    user = decodeURIComponent(who[1]);
    groups = (url.searchParams.get('groups') || '').split(',').filter(Boolean);
    res.writeHead(204).end();
  } else if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => { res.writeHead(500).end(String(err)); });
  } else {
    callback(req, res);
  }
});

console.log(`ISSUER ${issuer}`);
